package itest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// What a hostile server (or a careless parent process) can do to the
// daemon, and the bounds it must stay within.

var (
	plainOnce sync.Once
	plainBin  string
	plainErr  error
)

// plainTether is the daemon built as released, without -race: memory
// figures of a race build measure the detector's shadow memory, not the
// daemon.
func plainTether(t *testing.T) string {
	t.Helper()
	plainOnce.Do(func() {
		plainBin = filepath.Join(binDir, "tether-plain")
		// CGO_ENABLED=0 as the release build: a cgo build runs each new
		// thread on an 8 MB pthread stack with a malloc arena, which the
		// shipped static binary does not have.
		build := exec.Command("go", "build", "-o", plainBin, "github.com/tether-agent/tether/cmd/tether")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		if err != nil {
			plainErr = fmt.Errorf("build tether: %v\n%s", err, out)
		}
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainBin
}

// procStatusKB reads a "kB" field of /proc/PID/status, e.g. VmHWM.
func procStatusKB(t *testing.T, pid int, field string) int {
	t.Helper()
	v := procStatus(t, pid, field)
	n, err := strconv.Atoi(strings.TrimSuffix(v, " kB"))
	if err != nil {
		t.Fatalf("/proc/%d/status %s: %q", pid, field, v)
	}
	return n
}

func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return ""
}

// frame encodes a message with arbitrary header values.
func frame(t *testing.T, proto int, typ, sid string, props map[string]interface{}, body []byte) []byte {
	t.Helper()
	hdr := map[string]interface{}{"proto": proto, "typ": typ, "sid": sid}
	if props != nil {
		hdr["props"] = props
	}
	b, err := msgpack.Marshal(map[string]interface{}{"hdr": hdr, "body": body})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sync sends a control ping and waits for its pong: the daemon handles a
// link's frames in order, so everything sent before has been dealt with
// (and logged) when the pong comes back.
func (e *env) sync(d *mockserver.Device) {
	e.t.Helper()
	frames, cancel := d.Subscribe()
	defer cancel()
	sid := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	if err := d.SendRaw(websocket.BinaryMessage, frame(e.t, int(wire.ProtoControl), wire.TypePing, sid, nil, nil)); err != nil {
		e.t.Fatal(err)
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-frames:
			if !ok {
				e.t.Fatal("link ended while waiting for the probe's pong")
			}
			if m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypePong && m.Header.SessionID == sid {
				return
			}
		case <-timeout:
			e.t.Fatal("no pong for the probe")
		}
	}
}

func (e *env) sendRaw(d *mockserver.Device, b []byte) {
	e.t.Helper()
	if err := d.SendRaw(websocket.BinaryMessage, b); err != nil {
		e.t.Fatal(err)
	}
}

// bigID is a distinct identifier of n bytes.
func bigID(i, n int) string {
	p := fmt.Sprintf("%08d-", i)
	return p + strings.Repeat("x", n-len(p))
}

// propsBombFrame is a control pong whose props hold {"a": [{}, {}, ...]}
// with n empty maps, one byte each on the wire.
func propsBombFrame(sid string, n int) []byte {
	b := []byte("\x81\xa3hdr\x84\xa5proto\xcd\xff\xff\xa3typ\xa4pong\xa3sid")
	b = append(b, 0xa0|byte(len(sid)))
	b = append(b, sid...)
	b = append(b, "\xa5props\x81\xa1a\xdd"...)
	b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	return append(b, bytes.Repeat([]byte{0x80}, n)...)
}

// The daemon stays small whatever a server sends within the 1 MiB frame
// limit: a flood of new control sessions with 1 MB ids, or props that
// decode to a million maps.
func TestMemoryUnderHostileFrames(t *testing.T) {
	const limitKB = 64 << 10
	tests := []struct {
		name  string
		flood func(e *env, d *mockserver.Device)
	}{
		{"1024 pongs with distinct 1 MB session ids", func(e *env, d *mockserver.Device) {
			for i := 0; i < 1024; i++ {
				e.sendRaw(d, frame(t, int(wire.ProtoControl), wire.TypePong, bigID(i, 1_000_000), nil, nil))
			}
		}},
		{"20 props bombs of a million empty maps", func(e *env, d *mockserver.Device) {
			for i := 0; i < 20; i++ {
				e.sendRaw(d, propsBombFrame(fmt.Sprintf("bomb-%d", i), 1_000_000))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, nil, func(e *env) { e.bin = plainTether(t) })
			d := e.waitDevice()
			e.sync(d)
			pid := e.daemon.Process.Pid
			before := procStatusKB(t, pid, "VmHWM")
			tt.flood(e, d)
			e.sync(d)
			peak, rss := procStatusKB(t, pid, "VmHWM"), procStatusKB(t, pid, "VmRSS")
			t.Logf("daemon memory: high-water %d kB before, %d kB after the flood; resident %d kB", before, peak, rss)
			if peak > limitKB {
				t.Fatalf("daemon high-water mark %d kB, want under %d kB", peak, limitKB)
			}
			// Still serving.
			e.run(e.open(adminEmail), "echo alive")
		})
	}
}

// Lines that carry text the server controls are rate-limited and cut
// short, so a flood cannot rotate the audit trail out of the journal.
func TestJournalFloodBounded(t *testing.T) {
	const maxGrowth = 8 << 10
	const n = 50
	big := 512 << 10
	newShell := func(sid, user string) []byte {
		return frame(t, int(wire.ProtoShell), wire.ShellNew, sid, map[string]interface{}{wire.PropUserID: user}, nil)
	}
	tests := []struct {
		name  string
		frame func(i int) []byte
	}{
		{"refused sessions with 512 KiB session ids", func(i int) []byte {
			return newShell(bigID(i, big), mockserver.UserID("bob@tether.local"))
		}},
		{"refused sessions with 512 KiB user ids", func(i int) []byte {
			return newShell(fmt.Sprintf("0f0e0d0c-0b0a-4908-8706-%012d", i), bigID(i, big))
		}},
		{"refused sessions with ordinary ids", func(i int) []byte {
			return newShell(fmt.Sprintf("1f0e0d0c-0b0a-4908-8706-%012d", i), mockserver.UserID("bob@tether.local"))
		}},
		{"control errors with 512 KiB texts", func(i int) []byte {
			b, err := msgpack.Marshal(map[string]interface{}{"err": bigID(i, big), "close": false})
			if err != nil {
				t.Fatal(err)
			}
			return frame(t, int(wire.ProtoControl), wire.TypeError, fmt.Sprintf("2f0e0d0c-0b0a-4908-8706-%012d", i), nil, b)
		}},
	}
	// One shell fills the device, so every new session is refused.
	e := newEnvWith(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"MaxPerUser": 1, "MaxTotal": 1, "StopGrace": "200ms"},
	}, func(e *env) { e.bin = plainTether(t) })
	d := e.waitDevice()
	term := e.open(adminEmail)
	e.run(term, "true")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.sync(d)
			before := len(e.log.String())
			for i := 0; i < n; i++ {
				e.sendRaw(d, tt.frame(i))
			}
			e.sync(d)
			grown := len(e.log.String()) - before
			t.Logf("log grew by %d bytes for %d frames", grown, n)
			if grown > maxGrowth {
				t.Fatalf("log grew by %d bytes, want at most %d; the end of it:\n%s", grown, maxGrowth, tail(e.log.String(), 2000))
			}
		})
	}
	e.run(term, "echo still-serving")
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
