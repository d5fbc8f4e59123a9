package filetransfer

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/fdbudget"
	"github.com/tether-agent/tether/internal/wire"
)

// stalled is a Sender whose link never takes anything: a session's reply
// waits (bounded by the ack timeout) and its inbound messages pile up.
type stalled struct{}

func (stalled) Send(ctx context.Context, _ *wire.ProtoMsg) error {
	<-ctx.Done()
	return ctx.Err()
}

func statMsg(sid string, pathLen int) *wire.ProtoMsg {
	p := "/" + strings.Repeat("p", pathLen)
	b, _ := wire.EncodeBody(wire.FilePathBody{Path: &p})
	return &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FileStat, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: "u1"}}, Body: b}
}

// Inbound messages are bounded in bytes per session and over all
// sessions, and every byte is given back when the sessions end.
func TestQueueBytesBounded(t *testing.T) {
	tests := []struct {
		name     string
		sessions int
		pathLen  int
		perSess  int64
		total    int64
	}{
		{"one session, small messages", 1, 100, 64 << 10, 1 << 20},
		{"one session, messages over its bound", 1, 100 << 10, 64 << 10, 1 << 20},
		{"many sessions share the device's bound", 40, 30 << 10, 64 << 10, 512 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(Options{QueueBytes: tt.perSess, TotalQueueBytes: tt.total, AckTimeout: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			var ss []*session
			for i := 0; i < tt.sessions; i++ {
				ss = append(ss, p.Open("s"+string(rune('a'+i)), stalled{}).(*session))
			}
			for round := 0; round < 200; round++ {
				for _, s := range ss {
					s.Handle(statMsg(s.sid, tt.pathLen))
				}
				if q := p.queued.Load(); q > tt.total {
					t.Fatalf("device holds %d bytes, bound %d", q, tt.total)
				}
				for _, s := range ss {
					if n := s.bytes.Load(); n > tt.perSess {
						t.Fatalf("session holds %d bytes, bound %d", n, tt.perSess)
					}
				}
			}
			dropped := 0
			for _, s := range ss {
				if s.overflow.Load() {
					dropped++
				}
			}
			if dropped == 0 {
				t.Error("nothing was dropped")
			}
			for _, s := range ss {
				s.Close()
			}
			p.Wait()
			if q := p.queued.Load(); q != 0 {
				t.Errorf("%d bytes still counted after every session ended", q)
			}
		})
	}
}

// A session that handled a message and went idle counts nothing: idle
// sessions must not use up the device's bound.
func TestIdleSessionCountsNothing(t *testing.T) {
	pr := newPeer(t, Options{})
	pr.s.Handle(statMsg("sid-1", 100))
	pr.recv()
	eventually(t, 10*time.Second, "every queued byte given back", func() bool { return pr.p.queued.Load() == 0 && pr.s.bytes.Load() == 0 })
}

// The first message dropped is answered with the protocol's error, once
// per flood, with its props copied back.
func TestDroppedMessageAnswered(t *testing.T) {
	pr := newPeer(t, Options{QueueBytes: 16 << 10})
	pr.s.Handle(statMsg("sid-1", 20<<10)) // over the session's bound
	pr.s.Handle(statMsg("sid-1", 20<<10))
	pr.send(wire.FileStat, user1, enc(t, wire.FilePathBody{Path: sp("/")}))
	if got := pr.errText(wire.FileStat); got != msgQueueFull {
		t.Fatalf("got %q, want %q", got, msgQueueFull)
	}
	if m := pr.recv(); m.Header.MsgType != wire.FileInfo {
		t.Fatalf("then %s, want the stat's file_info", m.Header.MsgType)
	}
	select {
	case m := <-pr.out.ch:
		t.Fatalf("a second reply for the flood: %s %q", m.Header.MsgType, m.Body)
	case <-time.After(100 * time.Millisecond):
	}
}

// Transfers beyond MaxTransfers or the descriptor budget are refused with
// the protocol's error; what they took is given back.
func TestTransferLimits(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"transfer cap", Options{MaxTransfers: 1}, "too many file transfers in progress on the device (limit 1)"},
		{"descriptor budget", Options{FDs: fdbudget.New(fdsUpload)}, msgNoFDs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			a := &peer{t: t, p: p, out: &sender{ch: make(chan *wire.ProtoMsg, 64)}}
			a.s = p.Open("sid-1", a.out).(*session)
			b := &peer{t: t, p: p, out: &sender{ch: make(chan *wire.ProtoMsg, 64)}}
			b.s = p.Open("sid-1", b.out).(*session)
			t.Cleanup(func() { a.s.Close(); b.s.Close(); p.Wait() })
			// a's upload stays open; b's is refused.
			a.send(wire.FilePut, user1, enc(t, wire.UploadBody{Path: sp(filepath.Join(dir, "a"+tt.name))}))
			if m := a.recv(); m.Header.MsgType != wire.FileAck {
				t.Fatalf("first upload: %s %q", m.Header.MsgType, m.Body)
			}
			b.send(wire.FilePut, user1, enc(t, wire.UploadBody{Path: sp(filepath.Join(dir, "b"))}))
			if got := b.errText(wire.FilePut); got != tt.want {
				t.Fatalf("second upload: %q, want %q", got, tt.want)
			}
			// Once a's ends, b may.
			a.send(wire.FileChunk, props(0), nil)
			a.recv()
			eventually(t, 10*time.Second, "every transfer and descriptor given back", func() bool { return p.running.Load() == 0 && p.opts.FDs.InUse() == 0 })
			if e := b.put(wire.UploadBody{Path: sp(filepath.Join(dir, "b"))}, []byte("data")); e != "" {
				t.Fatalf("upload after the first ended: %s", e)
			}
		})
	}
}

// Every string this package logs is clipped, and the peer's error texts
// are rate-limited.
func TestPeerTextLogged(t *testing.T) {
	var buf bytes.Buffer
	pr := newPeer(t, Options{Log: slog.New(slog.NewTextHandler(&buf, nil))})
	big := strings.Repeat("e", 256<<10) // within a session's queue bound
	for i := 0; i < 30; i++ {
		pr.send(wire.FileError, user1, enc(t, wire.FileErrorBody{Error: big, MessageType: wire.FileChunk}))
	}
	pr.s.Handle(statMsg("sid-1", 10))
	pr.recv()
	if n := buf.Len(); n > 8<<10 {
		t.Fatalf("30 peer errors of 256 KiB wrote %d bytes of log", n)
	}
	if !strings.Contains(buf.String(), "(262144 bytes)") {
		t.Errorf("no clipped error text in:\n%s", buf.String())
	}
	if got := strings.Count(buf.String(), "error from the peer"); got < 1 || got > 10 {
		t.Errorf("%d lines for 30 peer errors; want the rate limit's burst", got)
	}
}
