package fleetsim

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/reconnect"
)

func defaultPolicy() reconnect.Policy {
	c := config.Default().Reconnect
	return reconnect.Policy{Base: c.BackoffBase.Duration(), Max: c.BackoffMax.Duration(), FirstJitter: c.FirstJitter.Duration()}
}

// What the shipped defaults do to a server with 10,000 devices.
func TestDefaultsSpareTheServer(t *testing.T) {
	const n = 10000
	p := defaultPolicy()
	t.Run("socket drop: no more than about a tenth of the fleet in any 100 ms", func(t *testing.T) {
		r := Run(p, Scenario{}, n, 1)
		if r.PeakPer100ms > n/10+n/50 {
			t.Fatalf("peak %d dials in 100 ms of %d devices", r.PeakPer100ms, n)
		}
		if r.Last > p.FirstJitter+DialCost {
			t.Fatalf("last device back after %v, want within the first jitter %v", r.Last, p.FirstJitter)
		}
	})
	t.Run("60 s outage: p99 back within 60 s of the return", func(t *testing.T) {
		r := Run(p, Scenario{Down: time.Minute}, n, 1)
		if r.P99 > time.Minute {
			t.Fatalf("p99 back after %v", r.P99)
		}
		if r.Last > p.Max+DialCost {
			t.Fatalf("last back after %v, beyond the cap %v", r.Last, p.Max)
		}
	})
	t.Run("Retry-After: 30 keeps every device away at least 30 s", func(t *testing.T) {
		r := Run(p, Scenario{Down: time.Minute, RetryAfter: 30 * time.Second}, n, 1)
		if r.MinAwayAfterRetryAfter < 30*time.Second {
			t.Fatalf("a device redialled %v after a Retry-After: 30", r.MinAwayAfterRetryAfter)
		}
	})
}

// The rules before the first jitter and the lower cap: the whole fleet
// in one instant, and a tail of minutes. The simulation must show it, or
// it could not show an improvement either.
func TestPreviousRulesShowTheHerd(t *testing.T) {
	const n = 10000
	old := reconnect.Policy{Base: time.Second, Max: 5 * time.Minute}
	if r := Run(old, Scenario{}, n, 1); r.PeakPer100ms != n {
		t.Fatalf("no first jitter: peak %d of %d in 100 ms", r.PeakPer100ms, n)
	}
	if r := Run(old, Scenario{Down: time.Minute}, n, 1); r.P99 < 2*time.Minute {
		t.Fatalf("5 min cap after a 60 s outage: p99 %v, expected minutes", r.P99)
	}
}

func TestTablePrintsEveryScenario(t *testing.T) {
	var b bytes.Buffer
	Table(&b, "defaults", defaultPolicy(), 1000)
	for _, s := range Scenarios() {
		if !strings.Contains(b.String(), s.Name) {
			t.Fatalf("table lacks %q:\n%s", s.Name, b.String())
		}
	}
}

// Devices that start together dial together unless the first dial after
// start is spread: the herd and its cure must both show.
func TestBootHerd(t *testing.T) {
	const n = 10000
	p := defaultPolicy()
	p.StartJitter = 0
	if r := Run(p, Scenario{Boot: true}, n, 1); r.PeakPer100ms != n {
		t.Fatalf("no start jitter: peak %d of %d in 100 ms", r.PeakPer100ms, n)
	}
	p.StartJitter = time.Second
	r := Run(p, Scenario{Boot: true}, n, 1)
	if r.PeakPer100ms > n/10+n/50 {
		t.Fatalf("start jitter 1 s: peak %d of %d in 100 ms", r.PeakPer100ms, n)
	}
	if r.Last > p.StartJitter+DialCost {
		t.Fatalf("start jitter 1 s: last device connected after %v", r.Last)
	}
}

// A server that accepts at most Rate dials a second never accepts more,
// and sees every refused device again no sooner than its Retry-After.
func TestRateLimit(t *testing.T) {
	const n = 2000
	s := Scenario{Rate: 100, Burst: 100, LimitRetryAfter: 30 * time.Second}
	r := Run(defaultPolicy(), s, n, 1)
	// All n back: the burst, then at most 100 a second, so the last no
	// sooner than (n-burst)/rate.
	if min := time.Duration(float64(n-s.Burst)/s.Rate*float64(time.Second)) - time.Second; r.Last < min {
		t.Fatalf("last back after %v; a limit of 100/s cannot take %d devices before %v", r.Last, n, min)
	}
	if r.MinAwayAfterRetryAfter < 30*time.Second {
		t.Fatalf("a device redialled %v after a Retry-After: 30", r.MinAwayAfterRetryAfter)
	}
	if r.PeakUpPer100ms != r.PeakPer100ms {
		t.Fatalf("server up throughout: peak up %d, peak %d", r.PeakUpPer100ms, r.PeakPer100ms)
	}
	if d := Run(defaultPolicy(), Scenario{Down: 10 * time.Second}, n, 1); d.PeakUpPer100ms >= d.PeakPer100ms {
		t.Fatalf("dials while the server is down count only in the peak of all dials: up %d, all %d", d.PeakUpPer100ms, d.PeakPer100ms)
	}
}
