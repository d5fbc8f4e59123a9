package wire

import "bytes"

// BodyPool lends the bodies of decoded messages that are at most
// BodyPoolSize bytes (an upload's chunks) from a bounded free list: a
// message whose consumer is done with its body gives it back with
// ProtoMsg.Release, so a bulk upload reuses a window's worth of buffers
// instead of allocating 4 KiB of garbage per chunk. Bodies never released
// are left to the garbage collector, as without a pool. A nil *BodyPool
// lends nothing.
//
// It lends the messages themselves the same way: a consumer done with a
// whole message (a transfer's chunk once written and acked, an ack once
// read) gives it back with ProtoMsg.Recycle.
//
// It also remembers the last few short strings decoded with it, for
// UnmarshalPooled's single decoding goroutine (the link's read loop).
type BodyPool struct {
	free chan []byte
	msgs chan *ProtoMsg

	// rd reads the frame being decoded: the decoding goroutine's own.
	rd bytes.Reader

	recent [4]string
	next   int
}

// BodyPoolSize is the largest body a BodyPool lends: a file chunk.
const BodyPoolSize = FileChunkSize

// NewBodyPool returns a pool that keeps at most n free bodies and n free
// messages.
func NewBodyPool(n int) *BodyPool {
	return &BodyPool{free: make(chan []byte, n), msgs: make(chan *ProtoMsg, n)}
}

// msg returns a zeroed message, lent by the pool when it has one.
func (p *BodyPool) msg() *ProtoMsg {
	select {
	case m := <-p.msgs:
		m.from = p
		return m
	default:
		return &ProtoMsg{from: p}
	}
}

// get returns a body of n bytes, and whether it is the pool's.
func (p *BodyPool) get(n int) ([]byte, bool) {
	if p == nil || n > BodyPoolSize || n < BodyPoolSize/2 {
		return make([]byte, n), false
	}
	select {
	case b := <-p.free:
		return b[:n], true
	default:
		return make([]byte, n, BodyPoolSize), true
	}
}

func (p *BodyPool) put(b []byte) {
	if cap(b) != BodyPoolSize {
		return
	}
	select {
	case p.free <- b[:0]:
	default: // the pool is full: let this one go
	}
}

// Release gives m's body back to the pool it was decoded into; m.Body is
// nil afterwards. Call it only when nothing refers to the body any more
// (it was written out); a message decoded without a pool is left alone.
func (m *ProtoMsg) Release() {
	if m.pool != nil {
		m.pool.put(m.Body)
		m.Body, m.pool = nil, nil
	}
}

// Recycle gives m back whole to the pool it was decoded with: its body
// (as Release) and the message itself, which the pool lends again to a
// later frame. Call it at most once, and only when nothing refers to m or
// to its header any more (copy what is kept, with Header.Clone); a
// message not decoded with a pool is left alone.
func (m *ProtoMsg) Recycle() {
	p := m.from
	if p == nil {
		return
	}
	m.Release()
	*m = ProtoMsg{}
	select {
	case p.msgs <- m:
	default: // the pool is full: let this one go
	}
}

// maxRecentLen bounds the strings a BodyPool remembers: ids, not paths.
const maxRecentLen = 64

// recentString returns the string b spells, the same one as for the
// last frames when it repeats theirs (a transfer's session and user
// ids), so that decoding them allocates nothing. Only the goroutine
// decoding with the pool calls it.
func (p *BodyPool) recentString(b []byte) string {
	for _, s := range p.recent {
		if s == string(b) { // compared in place, not converted
			return s
		}
	}
	s := string(b)
	p.recent[p.next] = s
	p.next = (p.next + 1) % len(p.recent)
	return s
}
