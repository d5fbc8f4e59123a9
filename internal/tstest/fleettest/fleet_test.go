// Package fleettest runs a small fleet of real tether daemons (50) against
// one mock-mender process and checks the reconnect rules at the server:
// the short variant of `make bench-fleet` (internal/tools/fleetbench).
package fleettest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/tools/fleetbench"
	"github.com/tether-agent/tether/internal/tools/fleetsim"
)

// fleetSize is small enough for `make test` on a shared 2-core machine.
const fleetSize = 50

// uidBase runs daemon i as uid uidBase+i when the test is root, so each
// token file's inotify instance counts against a user of its own instead
// of root's 128.
const uidBase = 200000

func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestFleetRules: 50 daemons whose first tokens arrive in one instant
// connect spread over the start jitter; after the server drops every
// socket they are back spread over the first jitter; a server that
// answers bursts with 503 and Retry-After keeps each refused device away
// that long and still gets all back; a token rotation of all brings all
// back at once.
func TestFleetRules(t *testing.T) {
	// Not t.TempDir: its parent is private to the test's user, and the
	// daemons may run as users of their own.
	dir, err := os.MkdirTemp("", "fleettest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tether := build(t, dir, "github.com/tether-agent/tether/cmd/tether")
	mock := build(t, dir, "github.com/tether-agent/tether/cmd/mock-mender")
	uids := 0
	if os.Geteuid() == 0 {
		uids = uidBase
	}
	f, err := fleetbench.New(fleetbench.Options{Tether: tether, Mock: mock, N: fleetSize, Dir: dir, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if err := f.StartServer(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	def := config.Default().Reconnect
	report := func(t *testing.T, r fleetbench.Result) {
		t.Helper()
		fleetbench.Header(testWriter{t})
		fleetbench.Row(testWriter{t}, r)
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Event, r.Err)
		}
		if r.Real.Back != fleetSize {
			t.Fatalf("%s: %d of %d devices back", r.Event, r.Real.Back, fleetSize)
		}
	}
	// The simulator's peak for 50 devices and a 1 s jitter is 16–20 %;
	// without the start jitter the same event puts 64–98 % of the fleet
	// in one 100 ms.
	const maxShare = 0.40
	peakRule := func(t *testing.T, r fleetbench.Result) {
		t.Helper()
		if limit := int(maxShare * fleetSize); r.Real.PeakPer100ms > limit {
			t.Errorf("%s: %d of %d devices dialled in one 100 ms, want at most %d (%.0f %%)", r.Event, r.Real.PeakPer100ms, fleetSize, limit, 100*maxShare)
		}
	}
	const slack = 2 * time.Second // a loaded 2-core machine's scheduling

	t.Run("first tokens in one instant", func(t *testing.T) {
		r := f.BootCredentials(ctx, "first tokens in one instant", uids)
		report(t, r)
		peakRule(t, r)
		if r.Real.Last > def.StartJitter.Duration()+slack {
			t.Errorf("last device connected %v after its token, want within the start jitter %v", r.Real.Last, def.StartJitter)
		}
		if r.Real.DialsPerDevice != 1 {
			t.Errorf("%.2f dials per device, want 1", r.Real.DialsPerDevice)
		}
	})
	t.Run("server drops every socket", func(t *testing.T) {
		r := f.Drop(ctx)
		report(t, r)
		peakRule(t, r)
		if r.Real.Last > def.FirstJitter.Duration()+slack {
			t.Errorf("last device back %v after the drop, want within the first jitter %v", r.Real.Last, def.FirstJitter)
		}
	})
	t.Run("503 with Retry-After above a rate", func(t *testing.T) {
		const rate, retryAfter = 10, 2 * time.Second
		r := f.Outage(ctx, "503 above 10/s", 0, fleetbenchLimit(rate, retryAfter),
			"--connect-rate", fmt.Sprint(rate), "--connect-burst", fmt.Sprint(rate), "--connect-retry-after", retryAfter.String())
		report(t, r)
		if r.RetryAfters == 0 {
			t.Fatalf("the server refused no connect; the limit was not reached")
		}
		last := map[string]time.Time{}
		for _, c := range r.Connects {
			if at, ok := last[c.Device]; ok {
				if away := c.At.Sub(at); away < retryAfter {
					t.Errorf("device %s redialled %v after a 503 with Retry-After: %v", c.Device, away, retryAfter)
				}
				delete(last, c.Device)
			}
			if c.Status == 503 {
				last[c.Device] = c.At
			}
		}
		if max := def.BackoffMax.Duration() + slack; r.Real.Last > max {
			t.Errorf("last device back %v after the server's return, want within BackoffMax %v", r.Real.Last, def.BackoffMax)
		}
		f.StopServer()
		since := time.Now()
		if err := f.StartServer(); err != nil {
			t.Fatal(err)
		}
		if err := f.Ready(ctx, since); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("every token rotates at once", func(t *testing.T) {
		r := f.Rotate(ctx, uids)
		report(t, r)
		// New credentials end the link and the device dials at once.
		if r.Real.Last > slack {
			t.Errorf("last device back %v after the rotation, want at once", r.Real.Last)
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func fleetbenchLimit(rate int, retryAfter time.Duration) fleetsim.Scenario {
	return fleetsim.Scenario{Rate: float64(rate), Burst: rate, LimitRetryAfter: retryAfter}
}
