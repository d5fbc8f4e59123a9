// Package fleetsim simulates a fleet of devices redialling one server with
// the real reconnect policy, so a change to the policy shows its effect on
// the server: how many dials arrive at once, and how long devices stay away
// after the server is back.
package fleetsim

import (
	"container/heap"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tether-agent/tether/internal/reconnect"
)

// Scenario is one server event. At time 0 every device's long-lived link
// drops (with Boot: every device starts); the server then refuses dials
// for Down (0: it closed the sockets but stays up), each refusal carrying
// RetryAfter when that is set. With Rate, the server, once up, accepts at
// most Rate dials a second (a token bucket of Burst, full when it comes
// up) and refuses the rest, with LimitRetryAfter, as a server that
// answers connect bursts with 503 does.
type Scenario struct {
	Name            string
	Down            time.Duration
	RetryAfter      time.Duration
	Boot            bool
	Rate            float64
	Burst           int
	LimitRetryAfter time.Duration
}

// Result is what the server saw.
type Result struct {
	// PeakPer100ms is the most dials in any 100 ms window, PeakPerSecond
	// in any one-second window.
	PeakPer100ms, PeakPerSecond int
	// Back is how long after the server's return each device was back,
	// sorted; P50, P99 and Last are read from it.
	P50, P99, Last time.Duration
	// MinAwayAfterRetryAfter is the shortest time from a failed dial that
	// carried Retry-After to that device's next dial (-1: none).
	MinAwayAfterRetryAfter time.Duration
	Dials                  int
	// PeakUpPer100ms is the most dials in any 100 ms window that reach
	// the server while it is up (dials to a server that is down are
	// refused by its host and never seen by it).
	PeakUpPer100ms int
}

// DialCost is what one dial takes, refused or not.
const DialCost = time.Millisecond

type event struct {
	at     time.Duration
	device int
}

type queue []event

func (q queue) Len() int            { return len(q) }
func (q queue) Less(i, j int) bool  { return q[i].at < q[j].at }
func (q queue) Swap(i, j int)       { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x interface{}) { *q = append(*q, x.(event)) }
func (q *queue) Pop() interface{} {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// Run simulates n devices with policy p through s, with a fixed seed so
// the same policy gives the same figures.
func Run(p reconnect.Policy, s Scenario, n int, seed uint64) Result {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	devices := make([]*reconnect.Backoff, n)
	q := make(queue, 0, n)
	for i := range devices {
		devices[i] = reconnect.NewWithRand(p, rng.Int64N)
		first := devices[i].AfterLink(time.Hour)
		if s.Boot {
			first = devices[i].AtStart()
		}
		q = append(q, event{at: first, device: i})
	}
	heap.Init(&q)
	const bin = 100 * time.Millisecond
	bins := map[int64]int{}
	upBins := map[int64]int{}
	limit := newBucket(s.Rate, s.Burst)
	lastFail := make([]time.Duration, n)
	for i := range lastFail {
		lastFail[i] = -1
	}
	var back []time.Duration
	res := Result{MinAwayAfterRetryAfter: -1}
	for q.Len() > 0 {
		e := heap.Pop(&q).(event)
		res.Dials++
		bins[int64(e.at/bin)]++
		if lastFail[e.device] >= 0 {
			if away := e.at - lastFail[e.device]; res.MinAwayAfterRetryAfter < 0 || away < res.MinAwayAfterRetryAfter {
				res.MinAwayAfterRetryAfter = away
			}
		}
		done := e.at + DialCost
		ra := s.RetryAfter
		if e.at >= s.Down {
			upBins[int64(e.at/bin)]++
			if limit.take(e.at - s.Down) {
				back = append(back, done-s.Down)
				continue
			}
			ra = s.LimitRetryAfter
		}
		lastFail[e.device] = -1
		if ra > 0 {
			lastFail[e.device] = done
		}
		heap.Push(&q, event{at: done + devices[e.device].AfterFailure(ra), device: e.device})
	}
	for _, c := range upBins {
		res.PeakUpPer100ms = max(res.PeakUpPer100ms, c)
	}
	for b, c := range bins {
		res.PeakPer100ms = max(res.PeakPer100ms, c)
		sec := 0
		for k := b; k < b+10; k++ {
			sec += bins[k]
		}
		res.PeakPerSecond = max(res.PeakPerSecond, sec)
	}
	slices.Sort(back)
	if len(back) > 0 {
		res.P50 = back[len(back)/2]
		res.P99 = back[len(back)*99/100]
		res.Last = back[len(back)-1]
	}
	return res
}

// bucket is the server's connect limit: rate a second, full at its
// return; nil accepts every dial. It is the mock server's
// (internal/mockserver ConnectLimit), on simulated time.
type bucket struct {
	rate, size, tokens float64
	last               time.Duration
}

func newBucket(rate float64, burst int) *bucket {
	if rate <= 0 {
		return nil
	}
	size := float64(burst)
	if size <= 0 {
		size = max(1, rate)
	}
	return &bucket{rate: rate, size: size, tokens: size}
}

// take reports whether a dial at t (since the server's return) is
// accepted.
func (b *bucket) take(t time.Duration) bool {
	if b == nil {
		return true
	}
	b.tokens = min(b.size, b.tokens+(t-b.last).Seconds()*b.rate)
	b.last = t
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Scenarios are the events the table shows.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "server closes every socket, stays up"},
		{Name: "server down 10 s", Down: 10 * time.Second},
		{Name: "server down 60 s", Down: 60 * time.Second},
		{Name: "server down 60 s, 503 Retry-After: 30", Down: 60 * time.Second, RetryAfter: 30 * time.Second},
		{Name: "devices boot together, server up", Boot: true},
		{Name: "devices boot together, server down 30 s", Boot: true, Down: 30 * time.Second},
	}
}

// Table prints the figures of every scenario for policy p.
func Table(w io.Writer, title string, p reconnect.Policy, n int) {
	fmt.Fprintf(w, "%s (StartJitter %s, FirstJitter %s, BackoffBase %s, BackoffMax %s; %d devices, dial %s)\n",
		title, p.StartJitter, p.FirstJitter, p.Base, p.Max, n, DialCost)
	fmt.Fprintf(w, "  %-42s %12s %12s   %s\n", "event", "peak/100ms", "peak/s", "back after the server returns: p50 / p99 / last")
	for _, s := range Scenarios() {
		r := Run(p, s, n, 1)
		extra := ""
		if s.RetryAfter > 0 {
			extra = fmt.Sprintf("   (nearest redial after a Retry-After: %s)", r.MinAwayAfterRetryAfter.Round(time.Millisecond))
		}
		fmt.Fprintf(w, "  %-42s %6d (%2.0f%%) %12d   %s / %s / %s%s\n", s.Name, r.PeakPer100ms,
			100*float64(r.PeakPer100ms)/float64(n), r.PeakPerSecond,
			r.P50.Round(100*time.Millisecond), r.P99.Round(100*time.Millisecond), r.Last.Round(100*time.Millisecond), extra)
	}
}
