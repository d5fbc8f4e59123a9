package itest

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// What a hostile server can make file transfer hold: memory in the
// sessions' inbound queues, lines in the journal, descriptors; and what
// an honest transfer costs.

// ftFrame is a file-transfer message from the server in session sid.
func ftFrame(t *testing.T, typ, sid string, props map[string]interface{}, body interface{}) []byte {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = msgpack.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	if props == nil {
		props = map[string]interface{}{wire.PropUserID: mockserver.UserID(adminEmail)}
	}
	return frame(t, int(wire.ProtoFileTransfer), typ, sid, props, b)
}

// manyPropsStat is a stat whose props hold n distinct scalar entries of 8
// bytes each on the wire (a 6-character key and a fixint): 131,072 of
// them fill a 1 MiB frame.
func manyPropsStat(sid string, n int) []byte {
	b := []byte("\x83\xa3hdr\x84\xa5proto\x02\xa3typ\xa4stat\xa3sid")
	b = append(b, 0xa0|byte(len(sid)))
	b = append(b, sid...)
	b = append(b, "\xa5props\xdf"...)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	for i := 0; i < n; i++ {
		b = append(b, 0xa6)
		b = append(b, fmt.Sprintf("%06x", i)...)
		b = append(b, byte(i&0x7f))
	}
	b = append(b, "\xa4body\xc4\x14\x81\xa4path\xae/no/such/file"...)
	// "other" is skipped by the decoder; it only keeps the map's count right.
	return append(b, "\xa5other\xc0"...)
}

// settledHWM waits until the daemon's high-water mark has not moved for a
// second (the flood is absorbed), at most 30 s, and returns it in kB.
func settledHWM(t *testing.T, pid int) int {
	t.Helper()
	last, since := procStatusKB(t, pid, "VmHWM"), time.Now()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		if n := procStatusKB(t, pid, "VmHWM"); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > time.Second {
			break
		}
	}
	return last
}

// settledLen is the daemon log's length once it has not grown for half a
// second (at most 10 s).
func settledLen(e *env) int {
	last, since := len(e.log.String()), time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && time.Since(since) < 500*time.Millisecond; {
		time.Sleep(50 * time.Millisecond)
		if n := len(e.log.String()); n != last {
			last, since = n, time.Now()
		}
	}
	return last
}

// A server that stops reading while it floods four file-transfer sessions
// must not grow the daemon beyond a small bound: every inbound queue is
// bounded in bytes, and so is their sum; props are kept only as far as
// something reads or echoes them.
func TestFileTransferFloodMemory(t *testing.T) {
	const limitKB = 64 << 10
	bigPath := "/" + strings.Repeat("p", 1_000_000)
	midPath := "/" + strings.Repeat("p", 400_000)
	tests := []struct {
		name     string
		sessions int
		frames   int // per session
		frame    func(t *testing.T, sid string, i int) []byte
	}{
		{"stat with 1 MB paths", 4, 130, func(t *testing.T, sid string, i int) []byte {
			return ftFrame(t, wire.FileStat, sid, nil, map[string]string{"path": bigPath})
		}},
		// Each fits a session's queue; together they are the device's.
		{"stat with 400 KB paths into 40 sessions", 40, 4, func(t *testing.T, sid string, i int) []byte {
			return ftFrame(t, wire.FileStat, sid, nil, map[string]string{"path": midPath})
		}},
		{"stat with 131000 props", 4, 8, func(t *testing.T, sid string, i int) []byte {
			return manyPropsStat(sid, 131000)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p *proxy
			e := newEnvWith(t, map[string]interface{}{
				"Link": map[string]interface{}{"WriteTimeout": "90s", "ReadTimeout": "120s"},
				"Log":  map[string]interface{}{"Journal": "off", "Level": "info"},
			}, func(e *env) {
				e.bin = plainTether(t)
				behindProxy(t, &p, 0)(e)
			})
			d := e.waitDevice()
			e.sync(d)
			pid := e.daemon.Process.Pid
			before := procStatusKB(t, pid, "VmHWM")
			p.Stall()
			start := time.Now()
			for i := 0; i < tt.frames; i++ {
				for s := 0; s < tt.sessions; s++ {
					e.sendRaw(d, tt.frame(t, fmt.Sprintf("flood-%d", s), i))
				}
			}
			sent := time.Since(start)
			peak := settledHWM(t, pid)
			p.Resume()
			e.sync(d)
			t.Logf("daemon high-water mark %d kB before, %d kB after %d frames into %d sessions (sent in %v); resident now %d kB",
				before, peak, tt.frames*tt.sessions, tt.sessions, sent.Round(time.Millisecond), procStatusKB(t, pid, "VmRSS"))
			if peak > limitKB {
				t.Errorf("daemon high-water mark %d kB, want under %d kB", peak, limitKB)
			}
			e.run(e.open(adminEmail), "echo alive")
		})
	}
}

// The peer's file-transfer error text reaches the log clipped and
// rate-limited: 30 errors of 1 MB (more than a session may queue) or of
// 256 KiB write a few kilobytes.
func TestFileTransferPeerErrorLogBounded(t *testing.T) {
	const maxGrowth = 8 << 10
	e := newEnvWith(t, nil, func(e *env) { e.bin = plainTether(t) })
	d := e.waitDevice()
	for _, size := range []int{1_000_000, 256 << 10} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			e.sync(d)
			time.Sleep(time.Second) // a fresh second for the rate limit
			before := len(e.log.String())
			for i := 0; i < 30; i++ {
				e.sendRaw(d, ftFrame(t, wire.FileError, fmt.Sprintf("err-%d-%d", size, i%3), nil,
					map[string]string{"err": bigID(i, size), "msgtype": wire.FileChunk}))
			}
			e.sync(d)
			// The sessions log from their own goroutines: wait until the
			// log has stopped growing.
			grown := settledLen(e) - before
			t.Logf("log grew by %d bytes for 30 peer errors of %d bytes", grown, size)
			if grown > maxGrowth {
				t.Fatalf("log grew by %d bytes, want at most %d; the end of it:\n%s", grown, maxGrowth, tail(e.log.String(), 2000))
			}
		})
	}
	if !strings.Contains(e.log.String(), fmt.Sprintf("(%d bytes)", 256<<10)) {
		t.Errorf("no clipped peer error in the log:\n%s", tail(e.log.String(), 2000))
	}
}

// With RLIMIT_NOFILE 256, 300 uploads left pending take what the budget
// gives and no more: the rest are refused with the protocol's error, and
// a new shell still gets its descriptors.
func TestFileTransferFDReserve(t *testing.T) {
	const uploads = 300
	dir := ftDir(t)
	// The transfer cap is out of the way: the descriptors are the bound.
	e := newEnvWith(t, map[string]interface{}{"FileTransfer": map[string]interface{}{"MaxTransfers": 1000}}, func(e *env) {
		e.wrap = []string{"prlimit", "--nofile=256:256", "--"}
	})
	d := e.waitDevice()
	if lim := procStatus(t, e.daemon.Process.Pid, "Pid"); lim == "" {
		t.Fatal("no daemon")
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", e.daemon.Process.Pid))
	if err != nil || !strings.Contains(string(limits), "Max open files            256                  256") {
		t.Fatalf("the daemon's RLIMIT_NOFILE is not 256:\n%s", limits)
	}
	frames, cancel := d.Subscribe()
	defer cancel()
	for i := 0; i < uploads; i++ {
		e.sendRaw(d, ftFrame(t, wire.FilePut, fmt.Sprintf("up-%d", i), nil,
			map[string]interface{}{"path": filepath.Join(dir, fmt.Sprintf("f-%d", i)), "mode": 0o644}))
	}
	answered := map[string]bool{}
	acks, refused := 0, map[string]int{}
	timeout := time.After(60 * time.Second)
	for len(answered) < uploads {
		select {
		case m, ok := <-frames:
			if !ok {
				t.Fatalf("link ended after %d answers", len(answered))
			}
			if m.Header.Proto != wire.ProtoFileTransfer || !strings.HasPrefix(m.Header.SessionID, "up-") || answered[m.Header.SessionID] {
				continue
			}
			answered[m.Header.SessionID] = true
			switch m.Header.MsgType {
			case wire.FileAck:
				acks++
			case wire.FileError:
				var b wire.FileErrorBody
				if err := msgpack.Unmarshal(m.Body, &b); err != nil {
					t.Fatal(err)
				}
				refused[b.Error]++
			default:
				t.Fatalf("unexpected %q", m.Header.MsgType)
			}
		case <-timeout:
			t.Fatalf("only %d of %d uploads answered", len(answered), uploads)
		}
	}
	t.Logf("%d uploads running, refusals: %v; daemon holds %d fds", acks, refused, e.fdCount())
	if acks == 0 {
		t.Error("no upload was accepted")
	}
	for text := range refused {
		if text != "file transfer refused: no file descriptors left for it (the rest is kept for shells and the link)" {
			t.Errorf("refused with %q; want the budget's refusal", text)
		}
	}
	if len(refused) == 0 {
		t.Error("no upload was refused")
	}
	before := e.fdCount()
	term := e.open(adminEmail)
	if out := e.run(term, "echo shell-$((6*7))"); !strings.Contains(out, "shell-42") {
		t.Errorf("the shell did not echo: %q", out)
	}
	t.Logf("a shell took %d fds", e.fdCount()-before)
}
