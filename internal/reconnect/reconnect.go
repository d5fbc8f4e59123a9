// Package reconnect is the device's redial policy. One device is one of
// many thousand behind a server, so the policy is what that server sees
// when it restarts or sheds its sockets: the first redial after a drop is
// spread over a short window instead of going out at once, failures back
// off with full jitter up to a cap that bounds how long a device stays
// away after an outage, and a server that says when to come back
// (Retry-After on 503 or 429) is obeyed.
package reconnect

import (
	"math/rand/v2"
	"strconv"
	"time"
)

// Policy is the configuration of a Backoff.
type Policy struct {
	// Base is the ceiling of the first wait after a failed dial; each
	// further failure doubles it up to Max.
	Base time.Duration
	// Max caps every wait, Retry-After included. After an outage the
	// fleet is back within about Max of the server's return; the
	// returning server then sees about fleet size ÷ Max dials a second.
	Max time.Duration
	// FirstJitter spreads the first redial after a link that had been up
	// (StableAfter or longer) dropped: uniform in [0, FirstJitter).
	FirstJitter time.Duration
	// StartJitter spreads the first dial after the daemon starts: uniform
	// in [0, StartJitter), so devices that boot together (power restored
	// at a site) do not all dial the server in the same instant.
	StartJitter time.Duration
	// StableAfter is how long a link must have been up for its drop to
	// count as a fresh start rather than one more failure; a server that
	// accepts and drops at once is backed off like one that refuses.
	StableAfter time.Duration
}

// DefaultStableAfter is Policy.StableAfter when it is zero.
const DefaultStableAfter = 10 * time.Second

// Backoff is one device's redial state. It is not safe for concurrent use.
type Backoff struct {
	p       Policy
	rnd     func(n int64) int64
	attempt int // consecutive failures
}

// New returns a Backoff for p drawing from the global random source.
func New(p Policy) *Backoff { return NewWithRand(p, rand.Int64N) }

// NewWithRand returns a Backoff drawing uniform values in [0, n) from rnd
// (for simulations and tests).
func NewWithRand(p Policy, rnd func(n int64) int64) *Backoff {
	if p.StableAfter <= 0 {
		p.StableAfter = DefaultStableAfter
	}
	if p.Max < p.Base {
		p.Max = p.Base
	}
	return &Backoff{p: p, rnd: rnd}
}

// Attempt is the number of consecutive failures so far.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset forgets past failures (new credentials are a fresh start).
func (b *Backoff) Reset() { b.attempt = 0 }

// AtStart is the wait before the first dial after the daemon starts.
func (b *Backoff) AtStart() time.Duration { return b.uniform(b.p.StartJitter) }

// AfterLink is the wait before redialling after a link that was up for
// uptime ended. A long-lived link starts afresh with a short random delay;
// a short-lived one counts as a failure.
func (b *Backoff) AfterLink(uptime time.Duration) time.Duration {
	if uptime >= b.p.StableAfter {
		b.attempt = 0
		return b.uniform(b.p.FirstJitter)
	}
	return b.AfterFailure(0)
}

// AfterFailure is the wait before the next dial after a failed one: full
// jitter, uniform in [0, min(Max, Base·2^(failures-1))). With retryAfter
// (from a 503 or 429) the wait is at least retryAfter, capped at Max, plus
// jitter within what is left of Max, so a fleet told to come back in 30 s
// does not return in one burst at 30 s.
func (b *Backoff) AfterFailure(retryAfter time.Duration) time.Duration {
	b.attempt++
	ceil := b.ceiling()
	if retryAfter <= 0 {
		return b.uniform(ceil)
	}
	ra := min(retryAfter, b.p.Max)
	return ra + b.uniform(min(ceil, b.p.Max-ra))
}

func (b *Backoff) ceiling() time.Duration {
	c := b.p.Base
	for i := 1; i < b.attempt && c < b.p.Max; i++ {
		c *= 2
	}
	return min(c, b.p.Max)
}

func (b *Backoff) uniform(ceil time.Duration) time.Duration {
	if ceil <= 0 {
		return 0
	}
	return time.Duration(b.rnd(int64(ceil)))
}

// HTTP status codes that may carry a Retry-After. Spelled out here rather
// than taken from net/http, which the slim device build does not link.
const (
	StatusTooManyRequests    = 429
	StatusServiceUnavailable = 503
)

// httpDates are the forms of an HTTP date (RFC 9110 §5.6.7): the
// preferred IMF-fixdate and the two obsolete ones a recipient must read.
var httpDates = [...]string{"Mon, 02 Jan 2006 15:04:05 GMT", time.RFC850, time.ANSIC}

// RetryAfter reads the value of a Retry-After header (delay-seconds or an
// HTTP date) of a 503 or 429 answer; 0 when there is none or it cannot be
// read.
func RetryAfter(code int, v string, now time.Time) time.Duration {
	if code != StatusServiceUnavailable && code != StatusTooManyRequests {
		return 0
	}
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		if s > int64(24*time.Hour/time.Second) {
			s = int64(24 * time.Hour / time.Second) // capped at Max by the caller
		}
		return time.Duration(s) * time.Second
	}
	for _, layout := range httpDates {
		if t, err := time.Parse(layout, v); err == nil {
			if t.After(now) {
				return t.Sub(now)
			}
			return 0
		}
	}
	return 0
}
