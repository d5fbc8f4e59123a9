package proto

import "sync"

// Group is what a protocol owns: its open sessions and every goroutine
// it started. A protocol's Close is the Group's: it closes the sessions
// still open and waits for the goroutines, so that nothing the protocol
// started outlives it. The zero Group is ready to use.
type Group struct {
	mu       sync.Mutex
	closed   bool
	sessions map[Session]struct{}
	wg       sync.WaitGroup
}

// Go runs f in a goroutine that Close waits for. Once Close has begun it
// starts nothing and returns false: the caller gives up what f was for.
func (g *Group) Go(f func()) bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	// Under the lock, so that no Add races with Close's Wait.
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// Track adds s to the sessions Close closes. It returns false once Close
// has begun; the caller then closes s itself.
func (g *Group) Track(s Session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.sessions == nil {
		g.sessions = make(map[Session]struct{})
	}
	g.sessions[s] = struct{}{}
	return true
}

// Untrack forgets s (it is closing).
func (g *Group) Untrack(s Session) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
}

// Close closes every session still tracked and waits until every
// goroutine Go started has ended. Calling it more than once is harmless.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	open := g.sessions
	g.sessions = nil
	g.mu.Unlock()
	for s := range open {
		s.Close()
	}
	g.wg.Wait()
}

// Wait waits until every goroutine Go started has ended, without
// closing anything (tests, after closing their sessions).
func (g *Group) Wait() { g.wg.Wait() }
