package session

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/leakcheck"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

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

// testSession is an admitted session without a protocol behind it: it
// records the stop the router asked for.
type testSession struct {
	mu      sync.Mutex
	reason  string
	checked int
}

func (s *testSession) Handle(*wire.ProtoMsg) {}
func (s *testSession) Supervise()            { s.mu.Lock(); s.checked++; s.mu.Unlock() }
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
	if err := r.Admit(sid, "u", func(proto.Lease) proto.AdmittedSession { return s }); err != nil {
		t.Fatalf("admit %s: %v", sid, err)
	}
	return s
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
			c := &clock{now: time.Unix(0, 0)}
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
				return s, r.Admit(sid, user, func(l proto.Lease) proto.AdmittedSession {
					l.Done() // no goroutines behind a test session
					return s
				})
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
