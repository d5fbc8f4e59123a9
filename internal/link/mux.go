package link

import (
	"context"
	"errors"
	"sync"
)

// ErrDown is returned by Queue.Put while no connection is up: output for
// sessions whose peers are gone is worthless (the server hands every new
// user connection a new session id), so it is dropped rather than kept.
var ErrDown = errors.New("link is down")

// ErrQueueClosed is returned by Put on a closed queue.
var ErrQueueClosed = errors.New("queue closed")

// Mux shares the one websocket fairly between sessions. Each session writes
// into its own bounded Queue; the writer takes one frame from each queue
// with pending frames in turn, so a session flooding output delays another
// session's keystroke echo by at most one frame. A full queue blocks its
// producer (the pty reader), which is how back-pressure reaches the shell.
type Mux struct {
	mu    sync.Mutex
	ready []*Queue // queues with pending frames, in service order
	up    bool
	wake  chan struct{}

	// writing is held by whoever writes a frame on the connection: the
	// writer goroutine, or a producer taking the direct path.
	writing bool
	direct  func([]byte) // writes one frame on the live connection
}

// NewMux returns a mux in the down state.
func NewMux() *Mux {
	return &Mux{wake: make(chan struct{}, 1)}
}

// directMax is the largest frame a producer writes itself. Bigger frames
// come from a busy shell; handing them to the writer lets the shell's next
// read overlap this write.
const directMax = 2048

// Queue is one producer's outbound frames.
type Queue struct {
	m       *Mux
	limit   int
	frames  [][]byte
	bytes   int
	inReady bool
	closed  bool
	space   chan struct{} // signalled when bytes drop or state changes
}

// NewQueue makes a queue holding at most limit bytes (a single larger
// frame is still accepted when the queue is empty).
func (m *Mux) NewQueue(limit int) *Queue {
	return &Queue{m: m, limit: limit, space: make(chan struct{}, 1)}
}

// Put queues a frame, waiting while the queue is full. It fails at once
// with ErrDown while the link is down, and with ctx's error if ctx ends.
// The mux owns frame afterwards.
func (q *Queue) Put(ctx context.Context, frame []byte) error {
	m := q.m
	for {
		m.mu.Lock()
		switch {
		case q.closed:
			m.mu.Unlock()
			return ErrQueueClosed
		case !m.up:
			m.mu.Unlock()
			return ErrDown
		case len(frame) <= directMax && q.bytes == 0 && len(m.ready) == 0 && !m.writing && m.direct != nil:
			// Nothing is queued anywhere and nobody is writing: write
			// the frame now instead of handing it to the writer, which
			// saves a goroutine wake-up on every keystroke echo.
			m.writing = true
			write := m.direct
			m.mu.Unlock()
			write(frame)
			m.mu.Lock()
			m.writing = false
			more := len(m.ready) > 0
			m.mu.Unlock()
			if more {
				m.signal()
			}
			return nil
		case q.fits(frame):
			q.enqueueLocked(frame)
			m.mu.Unlock()
			m.signal()
			return nil
		}
		m.mu.Unlock()
		select {
		case <-q.space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TryPut queues a frame without waiting; it reports false when the queue is
// full or the link is down. For replies from the read path, which must
// never block.
func (q *Queue) TryPut(frame []byte) bool {
	m := q.m
	m.mu.Lock()
	if q.closed || !m.up || !q.fits(frame) {
		m.mu.Unlock()
		return false
	}
	q.enqueueLocked(frame)
	m.mu.Unlock()
	m.signal()
	return true
}

// fits reports whether frame may be queued: a queue takes frames up to its
// limit, and always one frame when empty.
func (q *Queue) fits(frame []byte) bool {
	return q.bytes == 0 || q.bytes+len(frame) <= q.limit
}

// enqueueLocked appends frame and puts q in the service order; m.mu is held.
func (q *Queue) enqueueLocked(frame []byte) {
	q.frames = append(q.frames, frame)
	q.bytes += len(frame)
	if !q.inReady {
		q.inReady = true
		q.m.ready = append(q.m.ready, q)
	}
}

// Close refuses further frames and wakes a blocked Put. Frames already
// queued are still written (a session's last words, such as its stop
// notice, must not be lost), unless the link goes down first.
func (q *Queue) Close() {
	m := q.m
	m.mu.Lock()
	q.closed = true
	m.mu.Unlock()
	notify(q.space)
}

func (m *Mux) signal() { notify(m.wake) }

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// setUp switches the mux up, with direct writing frames on the new
// connection, or down (direct nil). Going down drops every pending frame
// and wakes blocked producers so they see ErrDown.
func (m *Mux) setUp(up bool, direct func([]byte)) {
	m.mu.Lock()
	m.up = up
	m.direct = direct
	var woken []*Queue
	if !up {
		for _, q := range m.ready {
			q.frames, q.bytes, q.inReady = nil, 0, false
			woken = append(woken, q)
		}
		m.ready = nil
	}
	m.mu.Unlock()
	for _, q := range woken {
		notify(q.space)
	}
}

// next pops the next frame in round-robin order, or nil if none is pending
// or a producer is writing directly. The caller writes the frame and then
// calls written.
func (m *Mux) next() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writing {
		return nil // the direct writer signals wake when it is done
	}
	for len(m.ready) > 0 {
		q := m.ready[0]
		m.ready = m.ready[1:]
		if len(q.frames) == 0 {
			q.inReady = false
			continue
		}
		f := q.frames[0]
		q.frames[0] = nil
		q.frames = q.frames[1:]
		q.bytes -= len(f)
		if len(q.frames) > 0 {
			m.ready = append(m.ready, q)
		} else {
			q.inReady = false
			q.frames = nil
		}
		notify(q.space)
		m.writing = true
		return f
	}
	return nil
}

// written ends the write of a frame from next.
func (m *Mux) written() {
	m.mu.Lock()
	m.writing = false
	m.mu.Unlock()
}

// Pending reports whether frames are waiting to be written.
func (m *Mux) Pending() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ready) > 0
}
