package terminal

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/tstest/leakcheck"
	"github.com/tether-agent/tether/internal/tstest/testclock"
	"github.com/tether-agent/tether/internal/wire"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// fakePty takes at most room bytes per TryWrite, and its Write can be held.
type fakePty struct {
	mu   sync.Mutex
	got  strings.Builder
	room int
	hold chan struct{} // Write waits for it when non-nil
}

func (p *fakePty) TryWrite(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(b), p.room)
	p.got.Write(b[:n])
	return n, nil
}

func (p *fakePty) Write(b []byte) (int, error) {
	if p.hold != nil {
		<-p.hold
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got.Write(b)
	return len(b), nil
}

func (p *fakePty) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got.String()
}

// Keystrokes reach the pty in the order typed: input that arrived while the
// shell was starting, or that the pty did not take at once, is never
// overtaken by later input taking the direct path.
func TestInputKeepsOrder(t *testing.T) {
	tests := []struct {
		name   string
		before []string // typed before Start
		after  []string // typed after Start
		room   int
	}{
		{"typed while the shell starts", []string{"A"}, []string{"B", "C"}, 100},
		{"pty full, then room", nil, []string{"AAAA", "B", "C"}, 2},
		{"everything direct", nil, []string{"A", "B"}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakePty{room: tt.room, hold: make(chan struct{})}
			q := newInputQueue(1<<10, func(int) {}, func(error) {})
			var want string
			for _, s := range tt.before {
				q.Write([]byte(s))
				want += s
			}
			q.Start(p)
			for _, s := range tt.after {
				q.Write([]byte(s))
				want += s
			}
			close(p.hold) // the writer may now finish its first write
			q.writers.Wait()
			q.End()
			if got := p.String(); got != want {
				t.Fatalf("pty read %q, want %q", got, want)
			}
		})
	}
}

func TestInputQueueBoundAndEnd(t *testing.T) {
	p := &fakePty{room: 100}
	q := newInputQueue(4, func(int) {}, func(error) {})
	// Before Start everything waits, within the bound.
	if !q.Write([]byte("abcd")) {
		t.Fatal("input within the bound dropped")
	}
	if q.Write([]byte("e")) {
		t.Fatal("the bound was not kept")
	}
	q.Start(p)
	q.writers.Wait()
	q.End()
	if got := p.String(); got != "abcd" {
		t.Fatalf("pty read %q", got)
	}
	if !q.Write([]byte("late")) || p.String() != "abcd" {
		t.Fatal("input after End must be dropped quietly")
	}
}

func TestTermSize(t *testing.T) {
	tests := []struct {
		w, h       interface{}
		cols, rows uint16
		ok         bool
	}{
		{80, 24, 80, 24, true},
		{65536, 24, maxTermDim, 24, true}, // uint16 made it 0
		{-1, 24, 0, 0, false},             // uint16 made it 65535
		{0, 24, 0, 0, false},
		{nil, 24, 0, 0, false},
		{int64(1) << 40, 1 << 40, maxTermDim, maxTermDim, true},
	}
	for _, tt := range tests {
		h := &wire.Header{Properties: map[string]interface{}{wire.PropTerminalHeight: tt.h}}
		if tt.w != nil {
			h.Properties[wire.PropTerminalWidth] = tt.w
		}
		c, r, ok := termSize(h)
		if c != tt.cols || r != tt.rows || ok != tt.ok {
			t.Errorf("termSize(%v, %v) = %d, %d, %v; want %d, %d, %v", tt.w, tt.h, c, r, ok, tt.cols, tt.rows, tt.ok)
		}
	}
}

// testLease is a router's lease without a router: a real queue and
// link-up clock; it records whether the session released its slot.
type testLease struct {
	m        *mux.Mux
	q        *mux.Queue
	released bool
	keep     bool     // Lost keeps the session detached
	lost     []string // the reasons Lost was told
}

func (l *testLease) Lost(reason string) bool {
	l.lost = append(l.lost, reason)
	return l.keep
}

func (l *testLease) Queue() *mux.Queue              { return l.q }
func (l *testLease) UpTime() time.Duration          { return l.m.UpTime() }
func (l *testLease) UpState() (time.Duration, bool) { return l.m.UpState() }
func (l *testLease) Wake()                          {}
func (l *testLease) Active()                        {}
func (l *testLease) Release()                       { l.released = true }
func (l *testLease) Done()                          {}
func (l *testLease) ShuttingDown() <-chan struct{}  { return nil }

// testSession is a shell session without a shell: only its lease, queue
// and health state.
func testSession(t *Protocol, m *mux.Mux, sid string) *session {
	ctx, cancel := context.WithCancel(context.Background())
	l := &testLease{m: m, q: m.NewQueue(1 << 10)}
	s := &session{t: t, lease: l, sid: sid, userID: "u", q: l.q, stopCh: make(chan stopRequest, 1), ctx: ctx, cancel: cancel}
	s.lastPingAt = m.UpTime()
	return s
}

func frames(m *mux.Mux) []*wire.ProtoMsg {
	var out []*wire.ProtoMsg
	for f := m.Next(); f != nil; f = m.Next() {
		msg, err := wire.Unmarshal(f)
		if err != nil {
			panic(err)
		}
		out = append(out, msg)
		m.Written(nil)
	}
	return out
}

// The health check counts only link-up time and starts a ping's deadline
// when the ping left: a ping that fell into a gap goes out after the
// reconnect, and a session whose peer could not answer is not ended.
func TestHealthCheckCountsLinkUpTime(t *testing.T) {
	c := testclock.New(time.Unix(0, 0)) // a board without RTC boots in 1970
	m := mux.New(c.Now)
	s := testSession(New(Options{PingInterval: time.Second, PongTimeout: 3 * time.Second, StopGrace: time.Millisecond}), m, "s1")
	m.Up(nil)
	c.Add(time.Second)
	s.Supervise(0) // a ping is queued, but the link drops before it leaves
	m.Down()
	for i := 0; i < 100; i++ {
		c.Add(time.Second)
		s.Supervise(0)
	}
	c.Add(time.Hour)
	s.Supervise(0)
	if stopped(s) {
		t.Fatal("session ended while the link was down")
	}
	// Up again: the ping that fell into the gap goes out now, announcing
	// the deadline it keeps.
	m.Up(nil)
	got := frames(m)
	if len(got) != 1 || got[0].Header.MsgType != wire.ShellPing {
		t.Fatalf("after the reconnect: %v", got)
	}
	if to, _ := got[0].Header.IntProp(wire.PropTimeout); to != 3 {
		t.Fatalf("ping announces timeout %d, want the 3 s it keeps", to)
	}
	// Its deadline runs from now, in link-up time.
	c.Add(2500 * time.Millisecond)
	s.Supervise(0)
	frames(m)
	if stopped(s) {
		t.Fatal("ended before 3 s of link-up time since the ping left")
	}
	c.Add(500 * time.Millisecond)
	s.Supervise(0)
	if !stopped(s) {
		t.Fatal("no pong for 3 s of link-up time, yet the session lives")
	}
	req := <-s.stopCh
	if req.reason != proto.ReasonHealthTimeout {
		t.Fatalf("stopped for %q", req.reason)
	}
}

func TestPongKeepsSession(t *testing.T) {
	c := testclock.New(time.Unix(0, 0))
	m := mux.New(c.Now)
	s := testSession(New(Options{PingInterval: time.Second, PongTimeout: 3 * time.Second}), m, "s1")
	m.Up(nil)
	for i := 0; i < 20; i++ {
		c.Add(time.Second)
		s.Supervise(0)
		frames(m)
		s.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellPong, SessionID: "s1"}})
	}
	if stopped(s) {
		t.Fatal("a session that answers every ping was ended")
	}
}

// The health check says when it is next due: the next ping, or the pong
// deadline once a ping left, and nothing while link-up time stands still.
func TestHealthCheckNextDue(t *testing.T) {
	tests := []struct {
		name    string
		up      bool
		pingOut bool // a ping left
		want    time.Duration
	}{
		{"ping", true, false, 60 * time.Second},
		{"no timer while the link is down", false, false, 0},
		{"pong deadline", true, true, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testclock.New(time.Unix(0, 0))
			m := mux.New(c.Now)
			s := testSession(New(Options{PingInterval: 60 * time.Second, PongTimeout: 5 * time.Second}), m, "s1")
			if tt.up {
				m.Up(nil)
			}
			if tt.pingOut {
				s.pingSent()
			}
			got, pinged := s.Supervise(0)
			if got != tt.want || pinged {
				t.Fatalf("Supervise(0) = %v, %v; want %v and no ping", got, pinged, tt.want)
			}
			if len(frames(m)) != 0 {
				t.Fatal("sent a frame although nothing was due")
			}
		})
	}
}

// A ping due within the lead the router allows goes now; without the lead
// it waits for its time.
func TestPingGoesEarlyWithALead(t *testing.T) {
	c := testclock.New(time.Unix(0, 0))
	m := mux.New(c.Now)
	s := testSession(New(Options{PingInterval: 60 * time.Second}), m, "s1")
	m.Up(nil)
	c.Add(50 * time.Second)
	if next, pinged := s.Supervise(0); pinged || next != 10*time.Second {
		t.Fatalf("Supervise(0) = %v, %v; want 10s and no ping", next, pinged)
	}
	if _, pinged := s.Supervise(15 * time.Second); !pinged {
		t.Fatal("a ping due in 10 s did not go with a 15 s lead")
	}
	if got := frames(m); len(got) != 1 || got[0].Header.MsgType != wire.ShellPing {
		t.Fatalf("frames %v, want one ping", got)
	}
}

func stopped(s *session) bool {
	return errors.Is(s.ctx.Err(), context.Canceled)
}

// On a slow link (a frame hint from the link's pacer) a big read goes out
// as frames of at most the hint, in order, all of it; without a hint it
// is one frame.
func TestOutputCutToFrameHint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hint   int
		frames int
	}{
		{"no hint", 0, 1},
		{"hint 1000", 1000, 4},
		{"hint above the read", 1 << 20, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := New(Options{ReadBuffer: 4000})
			m := mux.New(nil)
			s := testSession(tp, m, "sid")
			s.q = m.NewQueue(1 << 20)
			m.SetFrameHint(tc.hint)
			fb := tp.getBuf()
			want := make([]byte, 3500)
			for i := range want {
				want[i] = byte('a' + i%26)
			}
			copy((*fb)[frameHeadroom:], want)
			if err := s.send(context.Background(), "sid", make([]byte, 0, frameHeadroom), fb, len(want)); err != nil {
				t.Fatal(err)
			}
			var got []byte
			out := frames(m)
			for _, f := range out {
				if tc.hint > 0 && len(f.Body) > tc.hint {
					t.Errorf("a frame of %d bytes past a hint of %d", len(f.Body), tc.hint)
				}
				got = append(got, f.Body...)
			}
			if len(out) != tc.frames || string(got) != string(want) {
				t.Errorf("%d frames carrying %d bytes, want %d frames carrying the %d bytes in order", len(out), len(got), tc.frames, len(want))
			}
		})
	}
}
