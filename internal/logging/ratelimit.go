package logging

import (
	"sync"
	"time"
)

// RateLimit lets a burst of log lines through, then one per second, and
// counts what it held back. Every log line whose rate the server controls
// (a refusal, an error text from the peer, an unknown id) goes through
// one, so that a hostile server cannot fill the journal. The zero value
// is ready to use.
type RateLimit struct {
	mu         sync.Mutex
	last       time.Time
	tokens     int
	suppressed int
}

// Allow reports whether a line may be logged at now; a line refused is
// counted for TakeSuppressed.
func (l *RateLimit) Allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	const burst, every = 10, time.Second
	if l.last.IsZero() {
		l.tokens, l.last = burst, now
	}
	if add := int(now.Sub(l.last) / every); add > 0 {
		l.tokens = min(burst, l.tokens+add)
		l.last = l.last.Add(time.Duration(add) * every)
	}
	if l.tokens == 0 {
		l.suppressed++
		return false
	}
	l.tokens--
	return true
}

// TakeSuppressed returns how many lines were refused since the last call,
// for the "suppressed" attribute of the next line that goes out.
func (l *RateLimit) TakeSuppressed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.suppressed
	l.suppressed = 0
	return n
}
