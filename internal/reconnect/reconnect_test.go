package reconnect

import (
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

func newTest(p Policy) *Backoff {
	r := rand.New(rand.NewPCG(1, 2))
	return NewWithRand(p, r.Int64N)
}

// Full jitter: the k-th failure waits uniform in [0, min(Max, Base·2^(k-1))),
// spread over the whole range.
func TestFailureWaitsFullJitterUpToTheCap(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt := 1; attempt <= 12; attempt++ {
		ceil := min(p.Base<<(attempt-1), p.Max)
		var top time.Duration
		for i := 0; i < 2000; i++ {
			b := newTest(p)
			b.attempt = attempt - 1
			b.rnd = rand.New(rand.NewPCG(uint64(i), uint64(attempt))).Int64N
			d := b.AfterFailure(0)
			if d < 0 || d >= ceil {
				t.Fatalf("attempt %d: %v outside [0, %v)", attempt, d, ceil)
			}
			top = max(top, d)
		}
		if top < ceil*8/10 {
			t.Fatalf("attempt %d: largest of 2000 draws %v, ceiling %v: not full jitter", attempt, top, ceil)
		}
	}
}

func TestAfterLink(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute, FirstJitter: time.Second}
	tests := []struct {
		name         string
		uptime       time.Duration
		failures     int
		lo, hi       time.Duration // wait in [lo, hi)
		wantFailures int
	}{
		{"long-lived link: fresh start within the first jitter", time.Hour, 5, 0, time.Second, 0},
		{"exactly stable", DefaultStableAfter, 3, 0, time.Second, 0},
		{"accepted and dropped at once: one more failure", time.Second, 3, 0, 8 * time.Second, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var top time.Duration
			for i := 0; i < 1000; i++ {
				b := NewWithRand(p, rand.New(rand.NewPCG(uint64(i), 7)).Int64N)
				b.attempt = tt.failures
				d := b.AfterLink(tt.uptime)
				if d < tt.lo || d >= tt.hi {
					t.Fatalf("wait %v outside [%v, %v)", d, tt.lo, tt.hi)
				}
				if b.Attempt() != tt.wantFailures {
					t.Fatalf("failures %d, want %d", b.Attempt(), tt.wantFailures)
				}
				top = max(top, d)
			}
			if top < tt.hi*8/10 {
				t.Fatalf("largest wait %v: not spread over [%v, %v)", top, tt.lo, tt.hi)
			}
		})
	}
	if d := newTest(Policy{Base: time.Second, Max: time.Minute}).AfterLink(time.Hour); d != 0 {
		t.Fatalf("FirstJitter 0 waits %v", d)
	}
}

// Retry-After keeps a device away at least that long, plus jitter within
// the cap; absurd values are capped.
func TestRetryAfterIsObeyedAndCapped(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute}
	tests := []struct {
		name       string
		retryAfter time.Duration
		failures   int
		lo, hi     time.Duration // wait in [lo, hi]
	}{
		{"30 s on the first failure", 30 * time.Second, 0, 30 * time.Second, 31 * time.Second},
		{"30 s late in an outage", 30 * time.Second, 20, 30 * time.Second, time.Minute},
		{"a day is capped at the maximum", 24 * time.Hour, 0, time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i < 1000; i++ {
				b := NewWithRand(p, rand.New(rand.NewPCG(uint64(i), 9)).Int64N)
				b.attempt = tt.failures
				d := b.AfterFailure(tt.retryAfter)
				if d < tt.lo || d > tt.hi {
					t.Fatalf("wait %v outside [%v, %v]", d, tt.lo, tt.hi)
				}
				if b.Attempt() != tt.failures+1 {
					t.Fatalf("a Retry-After answer must count as a failure")
				}
			}
		})
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		code  int
		value string
		want  time.Duration
	}{
		{"seconds on 503", http.StatusServiceUnavailable, "30", 30 * time.Second},
		{"seconds on 429", http.StatusTooManyRequests, "5", 5 * time.Second},
		{"HTTP date", http.StatusServiceUnavailable, now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"date in the past", http.StatusServiceUnavailable, now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"ignored on 502", http.StatusBadGateway, "30", 0},
		{"garbage", http.StatusServiceUnavailable, "soon", 0},
		{"negative", http.StatusServiceUnavailable, "-4", 0},
		{"absent", http.StatusServiceUnavailable, "", 0},
		{"huge is bounded", http.StatusServiceUnavailable, "99999999999", 24 * time.Hour},
		{"obsolete RFC 850 date", http.StatusServiceUnavailable, now.Add(time.Hour).Format("Monday, 02-Jan-06 15:04:05 GMT"), time.Hour},
		{"obsolete asctime date", http.StatusTooManyRequests, now.Add(2 * time.Minute).Format(time.ANSIC), 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RetryAfter(tt.code, tt.value, now); got != tt.want {
				t.Fatalf("RetryAfter = %v, want %v", got, tt.want)
			}
			// The same as net/http reads it.
			if tt.value != "" && tt.code == http.StatusServiceUnavailable {
				if d, err := http.ParseTime(tt.value); err == nil && d.After(now) && d.Sub(now) != tt.want {
					t.Fatalf("net/http reads %q as %v", tt.value, d.Sub(now))
				}
			}
		})
	}
	if StatusServiceUnavailable != http.StatusServiceUnavailable || StatusTooManyRequests != http.StatusTooManyRequests {
		t.Fatal("the status constants differ from net/http's")
	}
}

// The first dial after start waits uniform in [0, StartJitter), spread
// over the whole range; none without a StartJitter.
func TestAtStart(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute, StartJitter: time.Second}
	var top time.Duration
	for i := 0; i < 1000; i++ {
		d := NewWithRand(p, rand.New(rand.NewPCG(uint64(i), 9)).Int64N).AtStart()
		if d < 0 || d >= p.StartJitter {
			t.Fatalf("wait %v outside [0, %v)", d, p.StartJitter)
		}
		top = max(top, d)
	}
	if top < p.StartJitter*9/10 {
		t.Fatalf("largest of 1000 draws %v: not spread over [0, %v)", top, p.StartJitter)
	}
	p.StartJitter = 0
	if d := newTest(p).AtStart(); d != 0 {
		t.Fatalf("no start jitter: waited %v", d)
	}
}
