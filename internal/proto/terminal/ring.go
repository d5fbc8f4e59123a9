package terminal

// ring keeps the latest output of a session, up to its size, for a user
// who reattaches: what they missed, and the screen it left behind. It
// grows with the output up to its size (a quiet shell never holds the
// whole of it), then wraps. total counts every byte ever written, so a
// peer that was sent output up to some total can be given the rest.
type ring struct {
	b     []byte // grows to max, then wraps at w
	max   int
	w     int
	total uint64
}

// ringStep is the smallest growth of a ring, so that a shell printing a
// line at a time does not reallocate on every line.
const ringStep = 4 << 10

func (r *ring) write(p []byte) {
	r.total += uint64(len(p))
	if r.max <= 0 || len(p) == 0 {
		return
	}
	if len(p) > r.max {
		p = p[len(p)-r.max:]
	}
	if len(r.b) < r.max {
		if n := len(r.b) + len(p); n > cap(r.b) {
			nb := make([]byte, len(r.b), min(r.max, max(n, 2*cap(r.b), ringStep)))
			copy(nb, r.b)
			r.b = nb
		}
		room := r.max - len(r.b)
		if len(p) <= room {
			r.b = append(r.b, p...)
			return
		}
		r.b = append(r.b, p[:room]...)
		p = p[room:]
		r.w = 0
	}
	n := copy(r.b[r.w:], p)
	copy(r.b, p[n:])
	r.w = (r.w + len(p)) % r.max
}

// since returns a copy of the output written after the first from bytes,
// as far as the ring still holds it, oldest first.
func (r *ring) since(from uint64) []byte {
	if from >= r.total {
		return nil
	}
	n := int(min(r.total-from, uint64(len(r.b))))
	if n == 0 {
		return nil // nothing kept (a ring of size 0)
	}
	out := make([]byte, 0, n)
	if len(r.b) < r.max {
		return append(out, r.b[len(r.b)-n:]...)
	}
	// Full: the oldest byte is at w.
	start := (r.w + r.max - n) % r.max
	if start+n <= r.max {
		return append(out, r.b[start:start+n]...)
	}
	out = append(out, r.b[start:]...)
	return append(out, r.b[:n-(r.max-start)]...)
}

// all returns a copy of everything the ring holds, oldest first.
func (r *ring) all() []byte { return r.since(0) }
