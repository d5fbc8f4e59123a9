package itest

import (
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tools/bench/procstat"
)

// A connected, idle daemon sleeps: no ticker wakes it while nothing is
// due. `make bench` measures the same for 60 s against tighter targets
// (2 and 3 wakeups/s); this shorter watch (20 s: a one-off burst after
// the sessions open still fits) leaves room for a loaded CI
// machine and still catches a ticker coming back (the old janitor and
// writer tickers alone made 12 wakeups/s).
func TestIdleWakeups(t *testing.T) {
	const (
		window     = 20 * time.Second
		maxWakeups = 5.0
		maxCPU     = 100 * time.Millisecond // per minute
	)
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "200ms", "MaxPerUser": 16},
	})
	e.waitDevice()
	pid := e.daemon.Process.Pid
	settle := func() { time.Sleep(time.Second) } // start-up and the last replies; nothing to wait for
	tests := []struct {
		name     string
		sessions int
	}{
		{"no session", 0},
		{"10 idle sessions", 10},
	}
	for _, tt := range tests {
		for i := 0; i < tt.sessions; i++ {
			e.run(e.open(adminEmail), "true")
		}
		settle()
		got, err := procstat.Watch(pid, window)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", tt.name, got)
		if got.WakeupsPerSec > maxWakeups || got.CPUPerMinute > maxCPU {
			t.Errorf("%s: %s; want at most %.0f wakeups/s and %v CPU/min", tt.name, got, maxWakeups, maxCPU)
		}
	}
}
