// Package mux shares the device's one websocket fairly between sessions.
// Producers (the router's sessions and the protocols) fill bounded
// per-session queues; the link drains them, one frame from each queue with
// pending frames in turn. Neither side imports the other: the link knows
// only a Mux, the producers only their Queue.
//
// Queues keep their frames while the link is down and send them, in order,
// after the reconnect: a short gap loses nothing. A full queue blocks its
// producer (the pty reader), which is how back-pressure reaches a shell,
// and why no CPU is spent on output nobody can take.
package mux

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrQueueClosed is returned by Put on a closed queue.
var ErrQueueClosed = errors.New("queue closed")

// DirectMax is the largest frame a producer writes itself. Bigger frames
// come from a busy shell; handing them to the writer lets the shell's next
// read overlap this write.
const DirectMax = 2048

type frame struct {
	b    []byte
	sent func() // called once the frame is on the connection; may be nil
	// held is the memory the frame pins, charged against the queue's
	// limit: a frame that is a window into a bigger pooled buffer costs
	// the whole buffer, so the limit bounds memory, not only bytes.
	held int
	// release gives a pooled buffer back once the frame is written; nil
	// for frames that own their memory.
	release func()
}

// cost is what the frame is charged against its queue's limit.
func (f *frame) cost() int { return max(len(f.b), f.held) }

// Mux is the set of queues and the link's view of them.
type Mux struct {
	now func() time.Time

	// frameHint is the largest frame the link wants now (0: any size): on
	// a slow link a big frame is seconds of wire time a keystroke's echo
	// waits behind, so producers cut their output to it.
	frameHint atomic.Int64

	mu    sync.Mutex
	ready []*Queue // queues with pending frames, in service order
	up    bool
	wake  chan struct{}
	ups   chan struct{} // signalled when the link comes up

	// writing is held by whoever writes a frame on the connection: the
	// writer goroutine, or a producer taking the direct path.
	writing  bool
	inFlight *Queue // the queue of the frame the writer took with Next
	flight   frame
	direct   func([]byte) error // writes one frame on the live connection
	// gate, when set, says whether a frame may go on the connection now
	// (the link's pacer); a producer writes directly only while it does.
	gate func() bool

	// Link-up time, from the monotonic clock: health checks count only
	// time in which the peer could have answered.
	upTotal time.Duration
	upSince time.Time
}

// New returns a mux in the down state. now is the clock (nil: time.Now);
// tests drive link-up time with their own.
func New(now func() time.Time) *Mux {
	if now == nil {
		now = time.Now
	}
	return &Mux{now: now, wake: make(chan struct{}, 1), ups: make(chan struct{}, 1)}
}

// Queue is one producer's outbound frames.
type Queue struct {
	m       *Mux
	limit   int
	frames  []frame // pending from head on
	head    int
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

// Put queues a frame, waiting while the queue is full; while the link is
// down it is kept for the next connection. It fails only with
// ErrQueueClosed or ctx's error. The mux owns frame afterwards.
func (q *Queue) Put(ctx context.Context, b []byte) error {
	return q.put(ctx, frame{b: b})
}

// PutPooled queues b, a window into a pooled buffer of held bytes: the
// queue is charged held, and release is called once b is on the
// connection (the writer has copied it). A frame still queued when the
// daemon stops is left to the garbage collector.
func (q *Queue) PutPooled(ctx context.Context, b []byte, held int, release func()) error {
	return q.put(ctx, frame{b: b, held: held, release: release})
}

func (q *Queue) put(ctx context.Context, f frame) error {
	b := f.b
	m := q.m
	for {
		m.mu.Lock()
		switch {
		case q.closed:
			m.mu.Unlock()
			return ErrQueueClosed
		case len(b) <= DirectMax && q.bytes == 0 && len(m.ready) == 0 && !m.writing && m.direct != nil && (m.gate == nil || m.gate()):
			// Nothing is queued anywhere and nobody is writing: write
			// the frame now instead of handing it to the writer, which
			// saves a goroutine wake-up on every keystroke echo.
			m.writing = true
			write := m.direct
			m.mu.Unlock()
			err := write(b)
			m.mu.Lock()
			m.writing = false
			if err != nil {
				// The connection failed under the write: the frame goes
				// first on the next one, not into the void.
				q.pushFrontLocked(f)
			}
			more := len(m.ready) > 0
			m.mu.Unlock()
			if more {
				m.signal()
			}
			if err == nil && f.release != nil {
				f.release()
			}
			return nil
		case q.fits(f.cost()):
			q.enqueueLocked(f)
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
// full or closed. For replies from the read path, which must never block.
func (q *Queue) TryPut(b []byte) bool {
	m := q.m
	m.mu.Lock()
	if q.closed || !q.fits(len(b)) {
		m.mu.Unlock()
		return false
	}
	q.enqueueLocked(frame{b: b})
	m.mu.Unlock()
	m.signal()
	return true
}

// Control queues a small control frame behind the queue's output even when
// the queue is full; the caller bounds how many it has outstanding. sent is
// called (from the writer, so it must be quick) once the frame is on the
// connection. It reports false on a closed queue.
func (q *Queue) Control(b []byte, sent func()) bool {
	m := q.m
	m.mu.Lock()
	if q.closed {
		m.mu.Unlock()
		return false
	}
	q.enqueueLocked(frame{b: b, sent: sent})
	m.mu.Unlock()
	m.signal()
	return true
}

// fits reports whether n bytes may be queued: a queue takes frames up to
// its limit, and always one frame when empty.
func (q *Queue) fits(n int) bool {
	return q.bytes == 0 || q.bytes+n <= q.limit
}

// enqueueLocked appends f and puts q in the service order; m.mu is held.
func (q *Queue) enqueueLocked(f frame) {
	if len(q.frames) == cap(q.frames) && q.head > 0 {
		// Full to the end with popped room at the front: move the
		// pending frames down instead of growing a new array.
		n := copy(q.frames, q.frames[q.head:])
		clear(q.frames[n:])
		q.frames, q.head = q.frames[:n], 0
	}
	q.frames = append(q.frames, f)
	q.bytes += f.cost()
	if !q.inReady {
		q.inReady = true
		q.m.ready = append(q.m.ready, q)
	}
}

// pushFrontLocked puts f back at the head of q, and q at the head of the
// service order, after a write that failed; m.mu is held.
func (q *Queue) pushFrontLocked(f frame) {
	q.frames = append([]frame{f}, q.frames[q.head:]...)
	q.head = 0
	q.bytes += f.cost()
	if q.inReady {
		for i, r := range q.m.ready {
			if r == q {
				q.m.ready = append(q.m.ready[:i], q.m.ready[i+1:]...)
				break
			}
		}
	}
	q.inReady = true
	q.m.ready = append([]*Queue{q}, q.m.ready...)
}

// Close refuses further frames and wakes a blocked Put. Frames already
// queued are still written, after a reconnect if need be: a session's last
// words, such as its stop notice, must not be lost.
func (q *Queue) Close() {
	m := q.m
	m.mu.Lock()
	q.closed = true
	m.mu.Unlock()
	notify(q.space)
}

// Bytes is what the queue holds.
func (q *Queue) Bytes() int {
	q.m.mu.Lock()
	defer q.m.mu.Unlock()
	return q.bytes
}

func (m *Mux) signal() { notify(m.wake) }

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Wake is signalled when frames become pending or a direct write ends.
func (m *Mux) Wake() <-chan struct{} { return m.wake }

// Up switches the mux up; direct writes one frame on the new connection
// (producers use it when the writer is idle).
func (m *Mux) Up(direct func([]byte) error) {
	m.mu.Lock()
	wasUp := m.up
	if !m.up {
		m.up, m.upSince = true, m.now()
	}
	m.direct = direct
	pending := len(m.ready) > 0
	m.mu.Unlock()
	if pending {
		m.signal()
	}
	if !wasUp {
		notify(m.ups)
	}
}

// SetFrameHint sets the largest frame producers should make; 0 = any.
func (m *Mux) SetFrameHint(n int) { m.frameHint.Store(int64(n)) }

// FrameHint is the largest frame the link wants now; 0 = any size.
func (q *Queue) FrameHint() int { return int(q.m.frameHint.Load()) }

// Gate sets what a producer's direct write must ask first (nil: nothing):
// while it says no, frames are queued for the writer, which waits for the
// same gate, so a flood of small frames cannot slip past it. It lasts
// until Down.
func (m *Mux) Gate(allow func() bool) {
	m.mu.Lock()
	m.gate = allow
	m.mu.Unlock()
}

// Ups is signalled when the link comes up: link-up time starts to run
// again, so timers kept in it (the health check's) are due again.
func (m *Mux) Ups() <-chan struct{} { return m.ups }

// Down switches the mux down; queued frames wait for the next connection.
func (m *Mux) Down() {
	m.mu.Lock()
	if m.up {
		m.upTotal += m.now().Sub(m.upSince)
		m.up = false
	}
	m.direct, m.gate = nil, nil
	m.mu.Unlock()
	m.frameHint.Store(0)
}

// UpTime is the total time the link has been up, by the monotonic clock.
func (m *Mux) UpTime() time.Duration {
	d, _ := m.UpState()
	return d
}

// UpState is UpTime and whether the link is up now (so it is running).
func (m *Mux) UpState() (total time.Duration, up bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.upTotal
	if m.up {
		d += m.now().Sub(m.upSince)
	}
	return d, m.up
}

// Next pops the next frame in round-robin order, or nil if none is pending
// or a producer is writing directly. The caller writes it and then calls
// Written.
func (m *Mux) Next() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writing {
		return nil // the direct writer signals wake when it is done
	}
	for len(m.ready) > 0 {
		q := m.ready[0]
		m.ready[0] = nil
		if len(m.ready) == 1 {
			m.ready = m.ready[:0] // reuse the array, as q.frames below
		} else {
			m.ready = m.ready[1:]
		}
		if q.head == len(q.frames) {
			q.inReady = false
			continue
		}
		f := q.frames[q.head]
		q.frames[q.head] = frame{}
		q.head++
		if q.head == len(q.frames) {
			// Back to the array's start: a transfer's queue, which
			// empties often, reuses one array instead of allocating
			// one per few frames.
			q.frames, q.head = q.frames[:0], 0
			if cap(q.frames) > 64 {
				q.frames = nil // a burst's array is not kept
			}
		}
		q.bytes -= f.cost()
		if q.head < len(q.frames) {
			m.ready = append(m.ready, q)
		} else {
			q.inReady = false
		}
		notify(q.space)
		m.writing, m.inFlight, m.flight = true, q, f
		return f.b
	}
	return nil
}

// Written ends the write of the frame from Next. A failed write puts the
// frame back at the head of its queue for the next connection.
func (m *Mux) Written(err error) {
	m.mu.Lock()
	q, f := m.inFlight, m.flight
	m.writing, m.inFlight, m.flight = false, nil, frame{}
	if err != nil && q != nil {
		q.pushFrontLocked(f)
	}
	m.mu.Unlock()
	if err == nil && f.sent != nil {
		f.sent()
	}
	if err == nil && f.release != nil {
		f.release()
	}
}

// Pending reports whether frames are waiting to be written.
func (m *Mux) Pending() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ready) > 0
}
