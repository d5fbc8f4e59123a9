package daemon

import (
	"context"
	"runtime"
	"runtime/debug"
)

// memoryReleaser gives freed memory back to the kernel once the last shell
// session has ended. The runtime's background scavenger returns it only
// slowly, so a device that served a burst of sessions would keep their
// peak as resident memory for minutes; when nothing is open, one forced
// collection costs nothing anyone waits for.
type memoryReleaser struct {
	counts func() (shells, users int)
	kick   chan struct{}
}

func newMemoryReleaser(counts func() (int, int)) *memoryReleaser {
	return &memoryReleaser{counts: counts, kick: make(chan struct{}, 1)}
}

// changed is called on every session change; it never blocks.
func (m *memoryReleaser) changed() {
	if n, _ := m.counts(); n != 0 {
		return
	}
	select {
	case m.kick <- struct{}{}:
	default: // a release is pending already
	}
}

// run releases memory, off the session's goroutine, whenever kicked: a
// burst of stops coalesces into one or two releases.
func (m *memoryReleaser) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
			if n, _ := m.counts(); n == 0 {
				// Two collections: the first only moves pooled read
				// buffers to the pools' victim caches.
				runtime.GC()
				debug.FreeOSMemory()
			}
		}
	}
}
