package itest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestNoLeaksAfterManySessions opens and ends 1,000 sessions in the ways a
// session can end and checks the daemon is left as it was: no extra fds,
// children, zombies or goroutines.
func TestNoLeaksAfterManySessions(t *testing.T) {
	cycles := 1000
	if testing.Short() {
		cycles = 100
	}
	// Lenient: one of the ways is the server's "user disconnected" stop,
	// which the real server never delivers (its user leaving silently
	// leaves the shell behind until tether notices).
	e := newLenientEnv(t, map[string]interface{}{"Sessions": map[string]interface{}{"MaxPerUser": 16, "StopGrace": "100ms"}}, nil)
	e.waitDevice()
	// Warm up: the first session loads everything that stays loaded.
	warm := e.open(adminEmail)
	e.run(warm, "true")
	_ = warm.Stop()
	e.waitStop(warm)
	warm.Close()
	time.Sleep(200 * time.Millisecond)
	fds0 := e.fdCount()
	g0 := e.goroutines()

	start := time.Now()
	for i := 0; i < cycles; i++ {
		ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
		term, err := e.tryOpen(adminEmail)
		if err != nil {
			cancel()
			t.Fatalf("cycle %d: %v", i, err)
		}
		switch i % 3 {
		case 0:
			_ = term.Stop()
		case 1:
			_, _ = term.Write([]byte("exit\n"))
		case 2:
			term.Close() // the server tells the device "user disconnected"
		}
		if i%3 != 2 {
			if _, err := term.WaitStop(ctx); err != nil {
				cancel()
				t.Fatalf("cycle %d: no stop: %v", i, err)
			}
			term.Close()
		}
		cancel()
	}
	t.Logf("%d open/stop cycles in %v", cycles, time.Since(start).Round(time.Millisecond))
	eventually(t, 10*time.Second, "sessions torn down", func() bool {
		live, zombies := e.children()
		return len(live) == 0 && len(zombies) == 0
	})
	eventually(t, 5*time.Second, fmt.Sprintf("fd count back to %d", fds0), func() bool { return e.fdCount() <= fds0 })
	eventually(t, 5*time.Second, fmt.Sprintf("goroutines back to %d", g0), func() bool { return e.goroutines() <= g0 })
	if strings.Contains(e.log.String(), "DATA RACE") {
		t.Fatal("the race detector fired in the daemon")
	}
}
