package session

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/leakcheck"
	"github.com/tether-agent/tether/internal/mux"
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

func TestAdmit(t *testing.T) {
	live := func(sid, user string, idle time.Duration, orphan bool) slot {
		return slot{sid: sid, user: user, lastInput: -idle, orphan: orphan}
	}
	tests := []struct {
		name        string
		table       []slot
		perUser     int
		total       int
		evictOldest bool
		want        admission
	}{
		{"free", nil, 1, 2, false, admission{}},
		{"per-user limit", []slot{live("a", "u", 0, false)}, 1, 4, false, admission{refuse: "per_user"}},
		{"orphan replaced", []slot{live("a", "u", 0, true)}, 1, 4, false,
			admission{evict: "a", evictNotice: "session replaced: its connection was lost"}},
		{"orphan before the most idle live one", []slot{live("a", "u", time.Hour, false), live("b", "u", 0, true)}, 2, 4, true,
			admission{evict: "b", evictNotice: "session replaced: its connection was lost"}},
		{"evict the most idle", []slot{live("a", "u", time.Second, false), live("b", "u", time.Hour, false)}, 2, 4, true,
			admission{evict: "b", evictNotice: "session replaced by a newer session of the same user"}},
		{"total limit", []slot{live("a", "v", 0, false), live("b", "w", 0, false)}, 1, 2, false, admission{refuse: "total"}},
		{"eviction frees a slot under the total", []slot{live("a", "u", 0, true), live("b", "w", 0, false)}, 1, 2, false,
			admission{evict: "a", evictNotice: "session replaced: its connection was lost"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := admit(tt.table, "u", tt.perUser, tt.total, tt.evictOldest); got != tt.want {
				t.Fatalf("admit = %+v, want %+v", got, tt.want)
			}
		})
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

// clock is a test clock that only moves when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testSession is a shell session without a shell: only its table entry,
// queue and health state.
func testSession(r *Router, sid string) *shellSession {
	ctx, cancel := context.WithCancel(context.Background())
	s := &shellSession{r: r, sid: sid, userID: "u", q: r.mux.NewQueue(1 << 10), stopCh: make(chan stopRequest, 1), ctx: ctx, cancel: cancel}
	s.born = r.mono()
	s.lastInput.Store(int64(s.born))
	s.lastPingAt = r.mux.UpTime()
	r.mu.Lock()
	r.shells[sid] = s
	r.mu.Unlock()
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
	c := &clock{now: time.Unix(0, 0)} // a board without RTC boots in 1970
	m := mux.New(c.Now)
	r := New(Options{PingInterval: time.Second, PongTimeout: 3 * time.Second, StopGrace: time.Millisecond, Now: c.Now}, m)
	s := testSession(r, "s1")
	m.Up(nil)
	c.Add(time.Second)
	r.sweep() // a ping is queued, but the link drops before it leaves
	m.Down()
	for i := 0; i < 100; i++ {
		c.Add(time.Second)
		r.sweep()
	}
	c.Add(time.Hour)
	r.sweep()
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
	r.sweep()
	frames(m)
	if stopped(s) {
		t.Fatal("ended before 3 s of link-up time since the ping left")
	}
	c.Add(500 * time.Millisecond)
	r.sweep()
	if !stopped(s) {
		t.Fatal("no pong for 3 s of link-up time, yet the session lives")
	}
	req := <-s.stopCh
	if req.reason != ReasonHealthTimeout {
		t.Fatalf("stopped for %q", req.reason)
	}
}

func TestPongKeepsSession(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	m := mux.New(c.Now)
	r := New(Options{PingInterval: time.Second, PongTimeout: 3 * time.Second, Now: c.Now}, m)
	s := testSession(r, "s1")
	m.Up(nil)
	for i := 0; i < 20; i++ {
		c.Add(time.Second)
		r.sweep()
		frames(m)
		r.HandleMessage(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellPong, SessionID: "s1"}})
	}
	if stopped(s) {
		t.Fatal("a session that answers every ping was ended")
	}
}

// Idle and absolute expiry follow the injected clock, whatever the wall
// clock says.
func TestExpiryFollowsClock(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options
		input  bool
		reason string
	}{
		{"idle", Options{IdleTimeout: 10 * time.Second}, false, ReasonIdleExpired},
		{"absolute despite input", Options{AbsoluteTimeout: 10 * time.Second, IdleTimeout: time.Hour}, true, ReasonAbsoluteExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{now: time.Unix(0, 0)}
			tt.opts.Now = c.Now
			r := New(tt.opts, mux.New(c.Now))
			s := testSession(r, "s1")
			for i := 0; i < 9; i++ {
				c.Add(time.Second)
				if tt.input {
					s.lastInput.Store(int64(r.mono()))
				}
				r.sweep()
			}
			if stopped(s) {
				t.Fatal("expired early")
			}
			c.Add(time.Second)
			r.sweep()
			if !stopped(s) {
				t.Fatal("did not expire")
			}
			if req := <-s.stopCh; req.reason != tt.reason {
				t.Fatalf("reason %q, want %q", req.reason, tt.reason)
			}
		})
	}
}

func stopped(s *shellSession) bool {
	return errors.Is(s.ctx.Err(), context.Canceled)
}

// The janitor sleeps until the next thing is due: nothing without
// sessions, the nearest of expiry, ping and pong deadline otherwise, and
// no health timer while link-up time stands still.
func TestSweepNextDue(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		session bool
		up      bool
		pingOut bool // a ping left 1 s after the start
		want    time.Duration
	}{
		{name: "no session", opts: Options{IdleTimeout: time.Hour, PingInterval: 60 * time.Second}, up: true, want: 0},
		{name: "idle expiry", opts: Options{IdleTimeout: 10 * time.Second}, session: true, up: true, want: 10 * time.Second},
		{name: "absolute before idle", opts: Options{IdleTimeout: time.Hour, AbsoluteTimeout: 20 * time.Second}, session: true, want: 20 * time.Second},
		{name: "ping", opts: Options{IdleTimeout: time.Hour, PingInterval: 60 * time.Second}, session: true, up: true, want: 60 * time.Second},
		{name: "no ping timer while the link is down", opts: Options{IdleTimeout: time.Hour, PingInterval: 60 * time.Second}, session: true, want: time.Hour},
		{name: "pong deadline", opts: Options{PingInterval: 60 * time.Second, PongTimeout: 5 * time.Second}, session: true, up: true, pingOut: true, want: 5 * time.Second},
		{name: "nothing configured", session: true, up: true, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{now: time.Unix(0, 0)}
			tt.opts.Now = c.Now
			m := mux.New(c.Now)
			r := New(tt.opts, m)
			if tt.up {
				m.Up(nil)
			}
			if tt.session {
				s := testSession(r, "s1")
				if tt.pingOut {
					s.pingSent()
				}
			}
			if got := r.sweep(); got != tt.want {
				t.Fatalf("sweep() = %v, want %v", got, tt.want)
			}
			if len(frames(m)) != 0 {
				t.Fatal("sent a frame although nothing was due")
			}
		})
	}
}

// A control session's idle ping and its answer deadline are what the
// janitor waits for.
func TestSweepNextDueControl(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	m := mux.New(c.Now)
	r := New(Options{Now: c.Now}, m)
	m.Up(nil)
	r.touchCtrl("c1")
	c.Add(8 * time.Second)
	if got := r.sweep(); got != ctrlPingAfter-8*time.Second {
		t.Fatalf("sweep() = %v, want the idle ping in %v", got, ctrlPingAfter-8*time.Second)
	}
	c.Add(ctrlPingAfter - 8*time.Second)
	if got := r.sweep(); got != ctrlTimeoutAfter {
		t.Fatalf("sweep() after the ping = %v, want its deadline %v", got, ctrlTimeoutAfter)
	}
}

// probeLoop is a health handle whose probes the test sends.
type probeLoop struct {
	probe chan struct{}
	beats chan struct{}
}

func (p *probeLoop) Probe() <-chan struct{} { return p.probe }
func (p *probeLoop) Beat()                  { p.beats <- struct{}{} }

// The running janitor answers probes while it has nothing to do, and a
// session opened while it sleeps is swept at once (its ping goes out).
func TestJanitorAnswersProbesAndWakes(t *testing.T) {
	p := &probeLoop{probe: make(chan struct{}, 1), beats: make(chan struct{}, 1)}
	m := mux.New(nil)
	m.Up(nil)
	r := New(Options{PingInterval: 4 * time.Millisecond, Janitor: p}, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := 0; i < 3; i++ {
		p.probe <- struct{}{}
		select {
		case <-p.beats:
		case <-time.After(5 * time.Second):
			t.Fatalf("probe %d not answered", i)
		}
	}
	testSession(r, "s1")
	r.wake()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-m.Wake():
		case <-deadline:
			t.Fatal("no ping after the janitor was woken for a new session")
		}
		if got := frames(m); len(got) > 0 {
			if got[0].Header.MsgType != wire.ShellPing {
				t.Fatalf("got %v, want a ping", got[0].Header)
			}
			return
		}
	}
}

// A session whose ping is due soon goes along with one that is due now,
// and both then share one wakeup; a session alone pings on time.
func TestPingsFallIntoStep(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	m := mux.New(c.Now)
	r := New(Options{PingInterval: 60 * time.Second, Now: c.Now}, m)
	m.Up(nil)
	testSession(r, "a")
	c.Add(10 * time.Second)
	testSession(r, "b")
	c.Add(45 * time.Second)
	if got := r.sweep(); got != 5*time.Second || len(frames(m)) != 0 {
		t.Fatalf("sweep() = %v before any ping is due, want 5s and no frame", got)
	}
	c.Add(5 * time.Second)
	r.sweep()
	if got := frames(m); len(got) != 2 {
		t.Fatalf("%d pings, want both sessions pinged together", len(got))
	}
	if got := r.sweep(); got != 60*time.Second {
		t.Fatalf("next due in %v, want both in step at 60s", got)
	}
}
