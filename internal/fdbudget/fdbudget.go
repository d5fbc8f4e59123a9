// Package fdbudget shares out the file descriptors that remote users' work
// may hold (open transfers, forwarded connections), so that what the server
// asks for can never take the descriptors a new shell and the link itself
// need: the daemon keeps a reserve below its RLIMIT_NOFILE and refuses
// new work beyond the rest, with the protocol's error, instead of failing
// somewhere else with "too many open files".
package fdbudget

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Budget counts descriptors taken against a limit. A nil *Budget has no
// limit (tests, and protocols built without one).
type Budget struct {
	limit int64
	used  atomic.Int64
}

// New returns a budget of limit descriptors; limit < 0 counts as 0 (every
// request is refused).
func New(limit int) *Budget {
	return &Budget{limit: int64(max(0, limit))}
}

// Acquire takes n descriptors if they fit and reports whether they did. It
// never blocks: a request that does not fit is refused now.
func (b *Budget) Acquire(n int) bool {
	if b == nil {
		return true
	}
	for {
		u := b.used.Load()
		if u+int64(n) > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			return true
		}
	}
}

// Release gives back n descriptors taken with Acquire.
func (b *Budget) Release(n int) {
	if b == nil {
		return
	}
	if b.used.Add(-int64(n)) < 0 {
		panic("fdbudget: released more than acquired")
	}
}

// InUse is how many descriptors are taken now.
func (b *Budget) InUse() int {
	if b == nil {
		return 0
	}
	return int(b.used.Load())
}

// Limit is the budget's size; -1 for a nil budget (no limit).
func (b *Budget) Limit() int {
	if b == nil {
		return -1
	}
	return int(b.limit)
}

// ProcessLimit returns the process's soft RLIMIT_NOFILE (Go raises it to
// the hard limit at start, so this is what the daemon really has).
func ProcessLimit() (int, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	if r.Cur > 1<<30 {
		return 1 << 30, nil
	}
	return int(r.Cur), nil
}
