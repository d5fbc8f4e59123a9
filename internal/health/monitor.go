// Package health knows whether tether's main loops are still making
// progress, and tells systemd about it: READY, STATUS, STOPPING
// and — only while every loop is alive — WATCHDOG pings.
//
// Liveness is asked for, not broadcast: every Check sends each loop a probe
// (a token on its Probe channel) and a loop answers by calling Beat, from
// the probe case of its select or from any other progress it makes. A loop
// that has left a probe unanswered for longer than its maxSilence is stale,
// so a loop blocked somewhere else (a deadlock, a write that never
// returns) stops the watchdog pings, while an idle loop wakes only when
// asked — once per watchdog period — instead of ticking to prove it lives.
//
// A loop that spends its time blocked in a call with its own deadline (the
// link reader in a read) parks itself around that call; the deadline is its
// liveness bound, and it answers by unparking when the call returns.
//
// Time is the monitor's monotonic clock: a wall-clock step (a board that
// boots in 1970 and syncs NTP later) neither trips nor disables it.
package health

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Clock reads monotonic time: any fixed origin, never stepped.
type Clock func() time.Duration

// SystemClock is the process's monotonic clock (time.Since keeps to the
// monotonic reading of the time.Now it started from).
func SystemClock() Clock {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

// Monitor tracks the liveness of named loops. It is safe for concurrent use.
type Monitor struct {
	now Clock

	mu    sync.Mutex
	loops []*Loop
}

// New returns an empty Monitor on clock now; nil means SystemClock. Tests
// pass their own to make staleness deterministic.
func New(now Clock) *Monitor {
	if now == nil {
		now = SystemClock()
	}
	return &Monitor{now: now}
}

// Loop is one registered loop. Its methods are cheap and safe to call from
// any goroutine.
type Loop struct {
	name       string
	maxSilence time.Duration

	probe chan struct{} // capacity 1: at most one probe waits
	// asked is the monitor clock, in nanoseconds plus one, when the
	// outstanding probe was sent; 0 while none is outstanding.
	asked  atomic.Int64
	parked atomic.Bool
}

// Register adds a loop that counts as stale when it leaves a probe
// unanswered for more than maxSilence. It starts out unparked with no
// probe outstanding. maxSilence should cover the longest legitimate stretch
// the loop spends without reaching its select (a write with its own
// timeout, say) and be shorter than the watchdog interval so that a stuck
// loop leads to a restart soon. Names should be unique; they are what the
// watchdog error and /healthz report.
func (m *Monitor) Register(name string, maxSilence time.Duration) *Loop {
	l := &Loop{name: name, maxSilence: maxSilence, probe: make(chan struct{}, 1)}
	m.mu.Lock()
	m.loops = append(m.loops, l)
	m.mu.Unlock()
	return l
}

// Name is the name the loop was registered with.
func (l *Loop) Name() string { return l.name }

// Probe delivers the monitor's questions; the loop selects on it and calls
// Beat.
func (l *Loop) Probe() <-chan struct{} { return l.probe }

// Beat answers the outstanding probe, if any: the loop made progress.
func (l *Loop) Beat() {
	l.asked.Store(0)
	// A probe answered by other progress need not wake the loop again.
	select {
	case <-l.probe:
	default:
	}
}

// Park marks the loop as legitimately not running, or blocked in a call
// that ends by itself (a read with a deadline, the link reader while the
// device is disconnected, a loop that has finished during shutdown); a
// parked loop is never stale.
func (l *Loop) Park() {
	l.parked.Store(true)
	l.asked.Store(0)
}

// Unpark undoes Park and counts as an answer, so the loop gets a full
// maxSilence from the next probe.
func (l *Loop) Unpark() {
	l.asked.Store(0)
	l.parked.Store(false)
}

// Check reports whether every unparked loop has answered its probes
// within its maxSilence; stale lists the names of the loops that have
// not, sorted. It also probes every loop without an outstanding probe, so
// calling it periodically (the watchdog does, every half interval) is what
// keeps the loops asked. A Monitor without loops is healthy. The signature
// matches what metrics.Handler takes, so m.Check can be passed directly.
func (m *Monitor) Check() (healthy bool, stale []string) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.loops {
		if l.parked.Load() {
			continue
		}
		asked := l.asked.Load()
		if asked == 0 {
			if l.asked.CompareAndSwap(0, int64(now)+1) {
				select {
				case l.probe <- struct{}{}:
				default: // an earlier probe still waits
				}
			}
			continue
		}
		if now-time.Duration(asked-1) > l.maxSilence {
			stale = append(stale, l.name)
		}
	}
	sort.Strings(stale)
	return len(stale) == 0, stale
}
