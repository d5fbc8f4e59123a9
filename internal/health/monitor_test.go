package health

import (
	"reflect"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock: a monotonic reading the monitor uses and
// a wall reading that tests step the way NTP does on a board without RTC.
type fakeClock struct {
	mu   sync.Mutex
	mono time.Duration
	wall time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{wall: time.Unix(0, 0)} }

func (c *fakeClock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// Advance moves both readings, as time passing does.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.mono += d
	c.wall = c.wall.Add(d)
	c.mu.Unlock()
}

// StepWall moves only the wall reading, as settimeofday does.
func (c *fakeClock) StepWall(d time.Duration) {
	c.mu.Lock()
	c.wall = c.wall.Add(d)
	c.mu.Unlock()
}

func TestMonitorCheck(t *testing.T) {
	type step struct {
		advance time.Duration
		wall    time.Duration // wall-clock step before the check
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
	const years = 50 * 365 * 24 * time.Hour
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name:  "fresh loops are healthy",
			steps: []step{{healthy: true}},
		},
		{
			name: "a probe unanswered for exactly maxSilence is not stale, just beyond is",
			steps: []step{
				{healthy: true}, // probes
				{advance: 2 * time.Second, healthy: true},
				{advance: time.Nanosecond, healthy: false, stale: []string{"janitor", "reader", "router"}},
			},
		},
		{
			name: "only the silent loop is stale, names sorted",
			steps: []step{
				{healthy: true},
				{advance: 1500 * time.Millisecond, do: beat("router", "reader"), healthy: true},
				{advance: 1 * time.Second, healthy: false, stale: []string{"janitor"}},
				{do: beat("janitor"), healthy: true},
			},
		},
		{
			name: "without a check nobody is asked, so nobody is stale",
			steps: []step{
				{advance: time.Hour, healthy: true},
				{advance: 2 * time.Second, healthy: true},
				{advance: time.Nanosecond, healthy: false, stale: []string{"janitor", "reader", "router"}},
			},
		},
		{
			name: "parked loop never stale; unpark counts as an answer",
			steps: []step{
				{do: func(l map[string]*Loop) { l["reader"].Park() }, healthy: true},
				{advance: time.Hour, do: beat("router", "janitor"), healthy: true},
				{do: func(l map[string]*Loop) { l["reader"].Unpark() }, healthy: true},
				{advance: 1500 * time.Millisecond, do: beat("router", "janitor"), healthy: true},
				{advance: 1 * time.Second, do: beat("router", "janitor"), healthy: false, stale: []string{"reader"}},
				{do: func(l map[string]*Loop) { l["reader"].Park() }, healthy: true},
			},
		},
		{
			name: "a stale loop recovers by answering",
			steps: []step{
				{healthy: true},
				{advance: 3 * time.Second, healthy: false, stale: []string{"janitor", "reader", "router"}},
				{do: beat("router", "janitor", "reader"), healthy: true},
			},
		},
		{
			name: "a wall clock stepping forward trips nothing",
			steps: []step{
				{healthy: true},
				{advance: time.Second, wall: years, healthy: true},
				{advance: 500 * time.Millisecond, do: beat("router", "janitor", "reader"), healthy: true},
			},
		},
		{
			name: "a wall clock stepping back does not hide a wedged loop",
			steps: []step{
				{healthy: true},
				{advance: time.Second, wall: -years, do: beat("router", "reader"), healthy: true},
				{advance: 1500 * time.Millisecond, wall: -time.Hour, do: beat("router", "reader"), healthy: false, stale: []string{"janitor"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			m := New(clk.Mono)
			loops := map[string]*Loop{
				"router":  m.Register("router", 2*time.Second),
				"janitor": m.Register("janitor", 2*time.Second),
				"reader":  m.Register("reader", 2*time.Second),
			}
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				clk.StepWall(s.wall)
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

// A check puts one probe on each loop's channel, a beat takes it back, and
// an outstanding probe is not sent twice.
func TestMonitorProbes(t *testing.T) {
	m := New(newFakeClock().Mono)
	l := m.Register("janitor", time.Second)
	pending := func() int { return len(l.Probe()) }
	m.Check()
	if pending() != 1 {
		t.Fatalf("after a check %d probes wait, want 1", pending())
	}
	m.Check()
	if pending() != 1 {
		t.Fatalf("after a second check %d probes wait, want 1", pending())
	}
	l.Beat()
	if pending() != 0 {
		t.Fatalf("after a beat %d probes wait, want 0", pending())
	}
	<-func() <-chan struct{} { m.Check(); return l.Probe() }()
	l.Beat()
	if ok, _ := m.Check(); !ok {
		t.Fatal("a loop that answered its probe is stale")
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
				select {
				case <-l.Probe():
				default:
				}
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
		{Summary{Link: "reconnecting in 41s", MaxTotal: 4, Alert: "identity conflict: another agent"},
			"link reconnecting in 41s; no sessions (limit 4); identity conflict: another agent"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.s, got, tt.want)
		}
	}
}
