package health

import (
	"reflect"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for deterministic staleness.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestMonitorCheck(t *testing.T) {
	type step struct {
		advance time.Duration
		do      func(l map[string]*Loop)
		healthy bool
		stale   []string
	}
	beat := func(names ...string) func(map[string]*Loop) {
		return func(l map[string]*Loop) {
			for _, n := range names {
				l[n].Beat()
			}
		}
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name:  "fresh loops are healthy",
			steps: []step{{healthy: true}},
		},
		{
			name: "exactly maxSilence is not stale, just beyond is",
			steps: []step{
				{advance: 2 * time.Second, healthy: true},
				{advance: time.Nanosecond, healthy: false, stale: []string{"janitor", "reader", "router"}},
			},
		},
		{
			name: "only the silent loop is stale, names sorted",
			steps: []step{
				{advance: 1500 * time.Millisecond, do: beat("router", "reader"), healthy: true},
				{advance: 1 * time.Second, healthy: false, stale: []string{"janitor"}},
				{do: beat("janitor"), healthy: true},
			},
		},
		{
			name: "parked loop never stale; unpark counts as a beat",
			steps: []step{
				{do: func(l map[string]*Loop) { l["reader"].Park() }, healthy: true},
				{advance: time.Hour, do: beat("router", "janitor"), healthy: true},
				{do: func(l map[string]*Loop) { l["reader"].Unpark() }, healthy: true},
				{advance: 1500 * time.Millisecond, do: beat("router", "janitor"), healthy: true},
				{advance: 1 * time.Second, do: beat("router", "janitor"), healthy: false, stale: []string{"reader"}},
			},
		},
		{
			name: "a stale loop recovers by beating",
			steps: []step{
				{advance: 3 * time.Second, healthy: false, stale: []string{"janitor", "reader", "router"}},
				{do: beat("router", "janitor", "reader"), healthy: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			m := New(clk.Now)
			loops := map[string]*Loop{
				"router":  m.Register("router", 2*time.Second),
				"janitor": m.Register("janitor", 2*time.Second),
				"reader":  m.Register("reader", 2*time.Second),
			}
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				if s.do != nil {
					s.do(loops)
				}
				healthy, stale := m.Check()
				if healthy != s.healthy || !reflect.DeepEqual(stale, s.stale) {
					t.Fatalf("step %d: Check() = %v, %q; want %v, %q", i, healthy, stale, s.healthy, s.stale)
				}
			}
		})
	}
}

func TestMonitorEmptyIsHealthy(t *testing.T) {
	if ok, stale := New(nil).Check(); !ok || stale != nil {
		t.Fatalf("Check() on empty monitor = %v, %q", ok, stale)
	}
}

func TestLoopName(t *testing.T) {
	if got := New(nil).Register("link-reader", time.Second).Name(); got != "link-reader" {
		t.Fatalf("Name() = %q", got)
	}
}

// TestMonitorConcurrent is for the race detector: beats, parks and checks
// from many goroutines at once.
func TestMonitorConcurrent(t *testing.T) {
	m := New(nil)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		l := m.Register("loop", time.Minute)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				l.Beat()
				if j%100 == 0 {
					l.Park()
					l.Unpark()
				}
			}
		}()
	}
	for j := 0; j < 100; j++ {
		if ok, stale := m.Check(); !ok {
			t.Errorf("unexpected stale loops %q", stale)
		}
	}
	wg.Wait()
}

func TestSummaryString(t *testing.T) {
	tests := []struct {
		s    Summary
		want string
	}{
		{Summary{}, "link unknown; no sessions"},
		{Summary{Link: "connected", MaxTotal: 16}, "link connected; no sessions (limit 16)"},
		{Summary{Link: "connected", Sessions: 1, Users: 1}, "link connected; 1 session for 1 user"},
		{Summary{Link: "disconnected", Sessions: 3, Users: 2, MaxTotal: 4}, "link disconnected; 3 sessions for 2 users (limit 4)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.s, got, tt.want)
		}
	}
}
