package session

import (
	"context"
	"errors"
	"fmt"
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

func TestAdmit(t *testing.T) {
	live := func(sid, user string, idle time.Duration) slot {
		return slot{sid: sid, user: user, lastInput: -idle}
	}
	gone := func(sid, user string, at time.Duration) slot {
		return slot{sid: sid, user: user, detached: true, detachedAt: at}
	}
	const lost = "session replaced: its connection was lost"
	tests := []struct {
		name        string
		table       []slot
		perUser     int
		total       int
		evictOldest bool
		keep        bool
		want        admission
	}{
		{"free", nil, 1, 2, false, true, admission{}},
		{"per-user limit", []slot{live("a", "u", 0)}, 1, 4, false, true, admission{refuse: "per_user"}},
		{"evicting a live one may be saved by a probe", []slot{live("a", "u", 0)}, 1, 4, true, true,
			admission{evict: "a", evictNotice: "session replaced by a newer session of the same user", evictsLive: true}},
		{"detached handed back", []slot{gone("a", "u", 0)}, 1, 4, false, true, admission{reattach: "a"}},
		{"detached handed back under the limit", []slot{gone("a", "u", 0)}, 2, 4, false, true, admission{reattach: "a"}},
		{"most recently detached first", []slot{gone("a", "u", time.Second), gone("b", "u", time.Hour), gone("c", "u", time.Minute)}, 3, 4, false, true,
			admission{reattach: "b"}},
		{"another user's detached shell is not handed over", []slot{gone("a", "v", 0)}, 1, 4, false, true, admission{}},
		{"at the total limit a detached shell still comes back", []slot{gone("a", "u", 0), live("b", "w", 0)}, 1, 2, false, true,
			admission{reattach: "a"}},
		{"detached counts against the total", []slot{gone("a", "v", 0), live("b", "w", 0)}, 1, 2, false, true, admission{refuse: "total"}},
		{"not kept: detached replaced", []slot{gone("a", "u", 0)}, 1, 4, false, false, admission{evict: "a", evictNotice: lost}},
		{"not kept: the longest gone first", []slot{gone("a", "u", time.Hour), gone("b", "u", time.Second)}, 2, 4, true, false,
			admission{evict: "b", evictNotice: lost}},
		{"not kept: detached before the most idle live one", []slot{live("a", "u", time.Hour), gone("b", "u", 0)}, 2, 4, true, false,
			admission{evict: "b", evictNotice: lost}},
		{"evict the most idle", []slot{live("a", "u", time.Second), live("b", "u", time.Hour)}, 2, 4, true, true,
			admission{evict: "b", evictNotice: "session replaced by a newer session of the same user", evictsLive: true}},
		{"total limit", []slot{live("a", "v", 0), live("b", "w", 0)}, 1, 2, false, true, admission{refuse: "total"}},
		{"eviction frees a slot under the total", []slot{gone("a", "u", 0), live("b", "w", 0)}, 1, 2, false, false,
			admission{evict: "a", evictNotice: lost}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := admit(tt.table, "u", tt.perUser, tt.total, tt.evictOldest, tt.keep); got != tt.want {
				t.Fatalf("admit = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// testSession is an admitted session without a protocol behind it: it
// records the stop the router asked for.
type testSession struct {
	mu      sync.Mutex
	reason  string
	checked int
	// due and ping are what its health check answers; early records the
	// lead each sweep allowed it.
	due   time.Duration
	ping  bool
	early []time.Duration
	// What the router told it of its peer.
	detaches  []bool
	attached  []string
	attachNew int
	probes    int
	answer    func() // the peer's answer to a probe, if it answers
}

func (s *testSession) Handle(*wire.ProtoMsg) {}
func (s *testSession) Detach(discard bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detaches = append(s.detaches, discard)
}
func (s *testSession) Attach(sid string, m *wire.ProtoMsg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attached = append(s.attached, sid)
	if m != nil {
		s.attachNew++
	}
}
func (s *testSession) Probe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.probes++
	if s.answer != nil {
		go s.answer()
	}
}
func (s *testSession) Supervise(early time.Duration) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked++
	s.early = append(s.early, early)
	return s.due, s.ping
}
func (s *testSession) Stop(reason, _ string, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason == "" {
		s.reason = reason
	}
}

func (s *testSession) stopped() string { s.mu.Lock(); defer s.mu.Unlock(); return s.reason }

func admitTest(t *testing.T, r *Router, sid string) *testSession {
	t.Helper()
	s := &testSession{}
	if _, _, err := admitWait(r, sid, "u", s); err != nil {
		t.Fatalf("admit %s: %v", sid, err)
	}
	return s
}

// admitWait admits s as sid of user, or hands over a detached session,
// and waits for the decision.
func admitWait(r *Router, sid, user string, s proto.AdmittedSession) (proto.AdmittedSession, bool, error) {
	type result struct {
		s          proto.AdmittedSession
		reattached bool
		err        error
	}
	ch := make(chan result, 1)
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: user}}}
	r.Admit(sid, user, m, func(proto.Lease) proto.AdmittedSession { return s },
		func(got proto.AdmittedSession, reattached bool, err error) { ch <- result{got, reattached, err} })
	res := <-ch
	return res.s, res.reattached, res.err
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
		{"idle", Options{IdleTimeout: 10 * time.Second}, false, proto.ReasonIdleExpired},
		{"absolute despite input", Options{AbsoluteTimeout: 10 * time.Second, IdleTimeout: time.Hour}, true, proto.ReasonAbsoluteExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testclock.New(time.Unix(0, 0))
			tt.opts.Now = c.Now
			tt.opts.MaxPerUser, tt.opts.MaxTotal = 1, 1
			r := New(tt.opts, mux.New(c.Now))
			s := admitTest(t, r, "s1")
			for i := 0; i < 9; i++ {
				c.Add(time.Second)
				if tt.input {
					r.shells["s1"].Active()
				}
				r.sweep()
			}
			if got := s.stopped(); got != "" {
				t.Fatalf("expired early: %s", got)
			}
			if s.checked != 9 {
				t.Fatalf("health check ran %d times in 9 ticks", s.checked)
			}
			c.Add(time.Second)
			r.sweep()
			if got := s.stopped(); got != tt.reason {
				t.Fatalf("reason %q, want %q", got, tt.reason)
			}
		})
	}
}

// Admit keeps the limits and says which one refused; the protocol words
// the refusal itself.
func TestAdmitRefusals(t *testing.T) {
	tests := []struct {
		name     string
		shutdown bool
		live     [][2]string // sid, user admitted first
		sid      string
		user     string
		want     error
	}{
		{"admitted", false, [][2]string{{"a", "u"}}, "b", "v", nil},
		{"sid taken", false, [][2]string{{"a", "u"}}, "a", "v", proto.ErrExists},
		{"per user", false, [][2]string{{"a", "u"}}, "b", "u", proto.ErrUserLimit},
		{"total", false, [][2]string{{"a", "u"}, {"c", "x"}}, "b", "w", proto.ErrTotalLimit},
		{"shutting down", true, [][2]string{{"a", "u"}}, "b", "v", proto.ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(Options{MaxPerUser: 1, MaxTotal: 2}, mux.New(nil))
			admit := func(sid, user string) (*testSession, error) {
				s := &testSession{}
				ch := make(chan error, 1)
				r.Admit(sid, user, nil, func(l proto.Lease) proto.AdmittedSession {
					l.Done() // no goroutines behind a test session
					return s
				}, func(_ proto.AdmittedSession, _ bool, err error) { ch <- err })
				return s, <-ch
			}
			var first *testSession
			for _, l := range tt.live {
				s, err := admit(l[0], l[1])
				if err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first = s
				}
			}
			if tt.shutdown {
				r.Shutdown(context.Background(), 0)
				if got := first.stopped(); got != proto.ReasonShutdown {
					t.Fatalf("shutdown stopped the session for %q", got)
				}
			}
			_, err := admit(tt.sid, tt.user)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("Admit = %v, want %v", err, tt.want)
			}
		})
	}
}

// The janitor sleeps until the next thing is due: nothing without
// sessions, otherwise the nearest of expiry and the sessions' own health
// checks (the terminal's tests pin when those are due).
func TestSweepNextDue(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		session bool
		health  time.Duration // what the session's health check says
		want    time.Duration
	}{
		{name: "no session", opts: Options{IdleTimeout: time.Hour, PingInterval: 60 * time.Second}, want: 0},
		{name: "idle expiry", opts: Options{IdleTimeout: 10 * time.Second}, session: true, want: 10 * time.Second},
		{name: "absolute before idle", opts: Options{IdleTimeout: time.Hour, AbsoluteTimeout: 20 * time.Second}, session: true, want: 20 * time.Second},
		{name: "health check sooner", opts: Options{IdleTimeout: time.Hour}, session: true, health: 5 * time.Second, want: 5 * time.Second},
		{name: "health check later", opts: Options{IdleTimeout: 10 * time.Second}, session: true, health: time.Minute, want: 10 * time.Second},
		{name: "nothing configured", session: true, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testclock.New(time.Unix(0, 0))
			tt.opts.Now = c.Now
			tt.opts.MaxPerUser, tt.opts.MaxTotal = 1, 1
			m := mux.New(c.Now)
			r := New(tt.opts, m)
			m.Up(nil)
			if tt.session {
				admitTest(t, r, "s1").due = tt.health
			}
			if got := r.sweep(); got != tt.want {
				t.Fatalf("sweep() = %v, want %v", got, tt.want)
			}
		})
	}
}

// A control session's idle ping and its answer deadline are what the
// janitor waits for.
func TestSweepNextDueControl(t *testing.T) {
	c := testclock.New(time.Unix(0, 0))
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
// session admitted while it sleeps is swept at once.
func TestJanitorAnswersProbesAndWakes(t *testing.T) {
	p := &probeLoop{probe: make(chan struct{}, 1), beats: make(chan struct{}, 1)}
	m := mux.New(nil)
	m.Up(nil)
	r := New(Options{PingInterval: time.Hour, Janitor: p, MaxPerUser: 1, MaxTotal: 1}, m)
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
	s := admitTest(t, r, "s1")
	r.wake()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := s.checked
		s.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the janitor was woken for a new session but did not sweep it")
		}
		time.Sleep(time.Millisecond) // the janitor runs on its own goroutine
	}
}

// When a ping goes out, the sweep runs again allowing a quarter interval's
// lead, so that sessions due soon go along and share one wakeup; without
// a ping nobody goes early.
func TestPingsFallIntoStep(t *testing.T) {
	m := mux.New(nil)
	m.Up(nil)
	r := New(Options{PingInterval: 60 * time.Second, MaxPerUser: 2, MaxTotal: 2}, m)
	quiet := admitTest(t, r, "a")
	r.sweep()
	if got := fmt.Sprint(quiet.early); got != "[0s]" {
		t.Fatalf("leads without a ping: %s, want [0s]", got)
	}
	pinging := &testSession{ping: true}
	if _, _, err := admitWait(r, "b", "u", pinging); err != nil {
		t.Fatal(err)
	}
	r.sweep()
	if got := fmt.Sprint(quiet.early); got != "[0s 0s 15s]" {
		t.Fatalf("leads after another session's ping: %s, want [0s 0s 15s]", got)
	}
}
