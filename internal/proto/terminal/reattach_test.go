package terminal

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/tstest/testclock"
	"github.com/tether-agent/tether/internal/wire"
)

func TestRing(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		from   uint64
		want   string
	}{
		{"off", 0, []string{"abc"}, 0, ""},
		{"empty", 8, nil, 0, ""},
		{"fits", 8, []string{"ab", "cd"}, 0, "abcd"},
		{"since", 8, []string{"ab", "cd"}, 1, "bcd"},
		{"since the end", 8, []string{"ab", "cd"}, 4, ""},
		{"fills exactly", 4, []string{"ab", "cd"}, 0, "abcd"},
		{"wraps", 4, []string{"abc", "def"}, 0, "cdef"},
		{"wraps twice", 4, []string{"abc", "def", "ghi"}, 0, "fghi"},
		{"write larger than the ring", 4, []string{"a", "bcdefgh"}, 0, "efgh"},
		{"since what was overwritten", 4, []string{"abc", "def"}, 1, "cdef"},
		{"since within the wrap", 4, []string{"abc", "def"}, 4, "ef"},
		{"grows past a step", 3 * ringStep, []string{strings.Repeat("x", ringStep+1), "y"}, uint64(ringStep + 1), "y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ring{max: tt.max}
			var total int
			for _, w := range tt.writes {
				r.write([]byte(w))
				total += len(w)
			}
			if r.total != uint64(total) {
				t.Fatalf("total %d, want %d", r.total, total)
			}
			if got := string(r.since(tt.from)); got != tt.want {
				t.Fatalf("since(%d) = %q, want %q", tt.from, got, tt.want)
			}
			if len(r.b) > max(tt.max, 0) {
				t.Fatalf("ring holds %d bytes, more than its %d", len(r.b), tt.max)
			}
		})
	}
}

// A byte-by-byte stream through a ring keeps exactly the latest bytes,
// whatever the wrap position.
func TestRingKeepsTheLatest(t *testing.T) {
	r := ring{max: 100}
	var all []byte
	for i := 0; i < 1000; i++ {
		p := []byte(fmt.Sprintf("%d,", i))
		r.write(p)
		all = append(all, p...)
		if got, want := r.all(), all[max(0, len(all)-100):]; !bytes.Equal(got, want) {
			t.Fatalf("after %d writes: %q, want %q", i+1, got, want)
		}
	}
}

// attachedSession is a session without a shell, as testSession, with a
// replay ring.
func attachedSession(tp *Protocol, m *mux.Mux, sid string) (*session, *testLease) {
	s := testSession(tp, m, sid)
	s.ring.max = tp.opts.ReplayBuffer
	s.sendCtx, s.sendCancel = context.WithCancel(s.ctx)
	return s, s.lease.(*testLease)
}

// A new terminal that gets a detached session sees, in order: the reply to
// its "new" under its own sid, one line saying whose shell this is, then
// what the ring holds, in frames no bigger than a read.
func TestAttachNewTerminal(t *testing.T) {
	m := mux.New(nil)
	tp := New(Options{ReplayBuffer: 64, ReadBuffer: 16})
	s, _ := attachedSession(tp, m, "old")
	s.created = time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	s.ring.write([]byte("tick 1\r\ntick 2\r\n"))
	s.Detach(true)
	s.ring.write([]byte("tick 3\r\n"))
	m.Up(nil)
	s.Attach("new", &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew, SessionID: "new",
		Properties: map[string]interface{}{wire.PropTerminalWidth: 100, wire.PropTerminalHeight: 30}}})
	got := frames(m)
	if len(got) < 3 {
		t.Fatalf("frames %v", got)
	}
	if h := got[0].Header; h.MsgType != wire.ShellNew || h.SessionID != "new" || string(got[0].Body) != msgShellStarted {
		t.Fatalf("first frame %+v %q, want the reply to new", h, got[0].Body)
	}
	notice := string(got[1].Body)
	if !strings.Contains(notice, "reattached to the shell started at 2026-12-06 01:02:03 UTC") || strings.Count(notice, "\n") != 2 ||
		!strings.HasPrefix(notice, "\r\n") || !strings.HasSuffix(notice, "\r\n") {
		t.Fatalf("notice %q, want one line of its own", notice)
	}
	var replay bytes.Buffer
	for _, f := range got[2:] {
		if f.Header.SessionID != "new" || f.Header.MsgType != wire.ShellData {
			t.Fatalf("replay frame %+v", f.Header)
		}
		if len(f.Body) > 16 {
			t.Fatalf("replay frame of %d bytes, more than a read", len(f.Body))
		}
		replay.Write(f.Body)
	}
	if replay.String() != "tick 1\r\ntick 2\r\ntick 3\r\n" {
		t.Fatalf("replay %q", replay.String())
	}
	if s.id() != "new" || s.detached || s.discard {
		t.Fatalf("after attach: sid %q, detached %v, discard %v", s.id(), s.detached, s.discard)
	}
	s.mu.Lock()
	cols, rows := s.cols, s.rows
	s.mu.Unlock()
	if cols != 100 || rows != 30 {
		t.Fatalf("size %dx%d, want the new terminal's 100x30", cols, rows)
	}
}

// The session's own peer answering after all gets only what it missed
// while its output was discarded, under the same sid, and no notice.
func TestAttachResumed(t *testing.T) {
	m := mux.New(nil)
	tp := New(Options{ReplayBuffer: 64, ReadBuffer: 16})
	s, _ := attachedSession(tp, m, "s1")
	s.ring.write([]byte("seen "))
	s.Detach(false) // link drop: output still goes out
	s.ring.write([]byte("sent "))
	s.sentUpTo = s.ring.total // as the pump does while not discarding
	s.Detach(true)
	if s.sendCtx.Err() == nil {
		t.Fatal("discarding must let go of a pump waiting for queue room")
	}
	s.ring.write([]byte("missed"))
	m.Up(nil)
	s.Attach("s1", nil)
	var out bytes.Buffer
	for _, f := range frames(m) {
		if f.Header.SessionID != "s1" || f.Header.MsgType != wire.ShellData {
			t.Fatalf("frame %+v", f.Header)
		}
		out.Write(f.Body)
	}
	if out.String() != "missed" {
		t.Fatalf("resumed peer got %q, want only what it missed", out.String())
	}
	if s.sendCtx.Err() != nil {
		t.Fatal("attached again, but the send context is still ended")
	}
}

// A detached session is not ended by its health check: its peer is known
// not to answer. An attached one whose peer stops answering is reported
// lost; the table decides whether it lives on.
func TestHealthCheckDetached(t *testing.T) {
	tests := []struct {
		name     string
		detached bool
		keep     bool
		stopped  bool
		lost     bool
	}{
		{"attached, detaching off: ended", false, false, true, true},
		{"attached, detaching on: lost", false, true, false, true},
		{"detached: nothing", true, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testclock.New(time.Unix(0, 0))
			m := mux.New(c.Now)
			s, l := attachedSession(New(Options{PingInterval: time.Second, PongTimeout: 3 * time.Second, StopGrace: time.Millisecond}), m, "s1")
			l.keep = tt.keep
			if tt.detached {
				s.Detach(false)
			}
			m.Up(nil)
			for i := 0; i < 10; i++ {
				c.Add(time.Second)
				s.Supervise(0)
				frames(m)
			}
			if stopped(s) != tt.stopped {
				t.Fatalf("stopped %v, want %v", stopped(s), tt.stopped)
			}
			if (len(l.lost) > 0) != tt.lost || (tt.lost && l.lost[0] != proto.DetachHealth) {
				t.Fatalf("Lost calls %v, want lost=%v", l.lost, tt.lost)
			}
		})
	}
}

// The first ping goes out within a minute whatever the interval (the
// Mender UI closes a terminal that heard none within 65 s of "new");
// later ones keep the interval.
func TestFirstPingWithinAMinute(t *testing.T) {
	c := testclock.New(time.Unix(0, 0))
	m := mux.New(c.Now)
	s, _ := attachedSession(New(Options{PingInterval: 10 * time.Minute, PongTimeout: 11 * time.Minute}), m, "s1")
	m.Up(nil)
	if next, _ := s.Supervise(0); next != FirstPingMax {
		t.Fatalf("first ping due in %v, want %v", next, FirstPingMax)
	}
	c.Add(FirstPingMax)
	if _, pinged := s.Supervise(0); !pinged {
		t.Fatal("no ping a minute after new")
	}
	frames(m)
	s.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellPong, SessionID: "s1"}})
	if next, _ := s.Supervise(0); next != 10*time.Minute {
		t.Fatalf("second ping due in %v, want the interval", next)
	}
	// A reattach is a new terminal: its first ping within a minute too.
	s.Attach("s2", &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew, SessionID: "s2"}})
	frames(m)
	if next, _ := s.Supervise(0); next != FirstPingMax {
		t.Fatalf("first ping after a reattach due in %v, want %v", next, FirstPingMax)
	}
}

// The server's own stops (the recording cut, "user disconnected") detach
// the session when the table keeps detached sessions; a client's stop
// ends it.
func TestServerStopDetaches(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		keep    bool
		stopped bool
		lost    string
	}{
		{"byte limit", "session byte limit exceeded", true, false, proto.DetachByteLimit},
		{"user disconnected", "user disconnected", true, false, proto.DetachUserGone},
		{"byte limit, detaching off", "session byte limit exceeded", false, true, proto.DetachByteLimit},
		{"client stop, no body", "", true, true, ""},
		{"client stop with a reason", "bye", true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mux.New(nil)
			tp := New(Options{StopGrace: time.Millisecond})
			s, l := attachedSession(tp, m, "s1")
			l.keep = tt.keep
			tb := &replyTable{}
			s.table = tb
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			s.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellStop, SessionID: "s1",
				Properties: map[string]interface{}{wire.PropStatus: wire.StatusError, wire.PropUserID: "u"}}, Body: body})
			if stopped(s) != tt.stopped {
				t.Fatalf("stopped %v, want %v", stopped(s), tt.stopped)
			}
			if got := strings.Join(l.lost, ","); got != tt.lost {
				t.Fatalf("Lost(%q), want %q", got, tt.lost)
			}
			if len(tb.replies) != 1 || tb.replies[0].Header.MsgType != wire.ShellStop {
				t.Fatalf("replies %v, want one stop", tb.replies)
			}
		})
	}
}

// replyTable records the replies of a session without a router.
type replyTable struct{ replies []*wire.ProtoMsg }

func (t *replyTable) Admit(string, string, *wire.ProtoMsg, func(proto.Lease) proto.AdmittedSession, func(proto.AdmittedSession, bool, error)) {
}
func (t *replyTable) StopUser(string, string) {}
func (t *replyTable) Reply(m *wire.ProtoMsg)  { t.replies = append(t.replies, m) }

// Keeping output for a reattach costs a copy per read and nothing else:
// once grown, the ring allocates nothing for a keystroke's echo or a
// full read.
func TestRingWriteAllocatesNothing(t *testing.T) {
	r := ring{max: 64 << 10}
	r.write(make([]byte, 64<<10)) // grown
	echo, read := []byte("a"), make([]byte, 32<<10)
	if n := testing.AllocsPerRun(1000, func() { r.write(echo) }); n != 0 {
		t.Fatalf("%v allocations per echo", n)
	}
	if n := testing.AllocsPerRun(100, func() { r.write(read) }); n != 0 {
		t.Fatalf("%v allocations per read", n)
	}
}

func BenchmarkRingWrite(b *testing.B) {
	for _, size := range []int{1, 255, 32 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			r := ring{max: 64 << 10}
			p := make([]byte, size)
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				r.write(p)
			}
		})
	}
}
