// Package health knows whether tether's main loops are still making
// progress, and tells systemd about it: READY, STATUS, STOPPING, RELOADING
// and — only while every loop is alive — WATCHDOG pings.
//
// Health is derived from the loops' own progress, never from guesses: each
// loop beats on every iteration and on a periodic tick inside its select, so
// a loop that is blocked somewhere else (a deadlock, a write that never
// returns) stops beating and the watchdog stops being fed.
package health

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Monitor tracks the liveness of named loops. It is safe for concurrent use.
type Monitor struct {
	now func() time.Time

	mu    sync.Mutex
	loops []*Loop
}

// New returns an empty Monitor. now is the clock; nil means time.Now. Tests
// pass a fake clock to make staleness deterministic.
func New(now func() time.Time) *Monitor {
	if now == nil {
		now = time.Now
	}
	return &Monitor{now: now}
}

// Loop is one registered loop. Its methods are cheap (an atomic store) and
// safe to call from any goroutine.
type Loop struct {
	name       string
	maxSilence time.Duration
	now        func() time.Time

	last   atomic.Int64 // monitor clock, UnixNano, of the latest Beat
	parked atomic.Bool
}

// Register adds a loop that counts as stale when it has not beaten for more
// than maxSilence. The loop starts out fresh (as if it had just beaten) and
// unparked. maxSilence must comfortably exceed the loop's own tick period,
// and should be shorter than the watchdog interval so that a stuck loop
// actually leads to a restart. Names should be unique; they are what the
// watchdog error and /healthz report.
func (m *Monitor) Register(name string, maxSilence time.Duration) *Loop {
	l := &Loop{name: name, maxSilence: maxSilence, now: m.now}
	l.last.Store(m.now().UnixNano())
	m.mu.Lock()
	m.loops = append(m.loops, l)
	m.mu.Unlock()
	return l
}

// Name is the name the loop was registered with.
func (l *Loop) Name() string { return l.name }

// Beat records progress.
func (l *Loop) Beat() {
	l.last.Store(l.now().UnixNano())
}

// Park marks the loop as legitimately not running (for example the link
// reader while the device is disconnected, or a loop that has finished
// during shutdown); a parked loop is never stale.
func (l *Loop) Park() {
	l.parked.Store(true)
}

// Unpark undoes Park and counts as a beat, so the loop gets a full
// maxSilence before it can be considered stale again.
func (l *Loop) Unpark() {
	l.Beat()
	l.parked.Store(false)
}

// Check reports whether every unparked loop has beaten within its
// maxSilence; stale lists the names of the loops that have not, sorted.
// A Monitor without loops is healthy. The signature matches what
// metrics.Handler takes, so m.Check can be passed directly.
func (m *Monitor) Check() (healthy bool, stale []string) {
	now := m.now().UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.loops {
		if l.parked.Load() {
			continue
		}
		if time.Duration(now-l.last.Load()) > l.maxSilence {
			stale = append(stale, l.name)
		}
	}
	sort.Strings(stale)
	return len(stale) == 0, stale
}
