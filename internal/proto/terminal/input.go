package terminal

import "sync"

// ptyWriter is what the input queue writes to: the shell's pty.
type ptyWriter interface {
	// TryWrite writes what fits now without waiting.
	TryWrite(b []byte) (int, error)
	// Write writes all of b, waiting for room.
	Write(b []byte) (int, error)
}

// inputQueue carries terminal input from the link's read loop to a pty in
// arrival order. The read loop never waits: while nothing is pending it
// writes straight to the pty; what the pty does not take, and everything
// behind it, goes to a single writer goroutine that lives only while input
// is pending. Input that arrives before the shell runs waits for Start.
type inputQueue struct {
	limit int
	sent  func(n int) // bytes that reached the pty, for metrics
	logf  func(err error)

	mu      sync.Mutex
	w       ptyWriter // nil until Start
	pending [][]byte
	bytes   int
	writing bool // the writer goroutine runs; it owns the head of pending
	done    bool
	writers sync.WaitGroup
}

func newInputQueue(limit int, sent func(int), logf func(error)) *inputQueue {
	return &inputQueue{limit: limit, sent: sent, logf: logf}
}

// Write queues b; it reports false when b had to be dropped because the
// shell has not read its terminal for a long time.
func (q *inputQueue) Write(b []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return true // stopping: input is moot
	}
	// Only with nothing pending may input bypass the queue: otherwise a
	// later keystroke would overtake an earlier one.
	if q.w != nil && !q.writing && len(q.pending) == 0 {
		n, err := q.w.TryWrite(b)
		if err != nil {
			q.logf(err)
			return true
		}
		q.sent(n)
		b = b[n:]
		if len(b) == 0 {
			return true
		}
	}
	if q.bytes+len(b) > q.limit {
		return false
	}
	q.pending = append(q.pending, b)
	q.bytes += len(b)
	if q.w != nil && !q.writing {
		q.startLocked()
	}
	return true
}

// Start connects the queue to the pty and hands it what arrived before.
func (q *inputQueue) Start(w ptyWriter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return
	}
	q.w = w
	if len(q.pending) > 0 && !q.writing {
		q.startLocked()
	}
}

func (q *inputQueue) startLocked() {
	q.writing = true
	q.writers.Add(1)
	w := q.w
	go func() {
		defer q.writers.Done()
		for {
			q.mu.Lock()
			if len(q.pending) == 0 || q.done {
				q.pending, q.bytes, q.writing = nil, 0, false
				q.mu.Unlock()
				return
			}
			b := q.pending[0]
			q.pending[0] = nil
			q.pending = q.pending[1:]
			q.bytes -= len(b)
			q.mu.Unlock()
			if _, err := w.Write(b); err != nil {
				q.logf(err)
				q.mu.Lock()
				q.pending, q.bytes, q.writing = nil, 0, false
				q.mu.Unlock()
				return
			}
			q.sent(len(b))
		}
	}()
}

// End drops pending input and waits for the writer (it ends once the pty
// master is closed, or its current write completes).
func (q *inputQueue) End() {
	q.mu.Lock()
	q.done = true
	q.pending, q.bytes = nil, 0
	q.mu.Unlock()
	q.writers.Wait()
}
