package link

import (
	"sync"
	"time"
)

// The pacer bounds the bytes on their way to the server to what the path
// drains in a short target delay, so that a keystroke's echo queued behind
// a flood waits a fraction of a second at any link speed.
//
// The kernel cannot do this alone. TCP_NOTSENT_LOWAT keeps the device's
// unsent bytes small, and the congestion control bounds the unacknowledged
// ones, but on a path whose receiver reads slowly (a congested relay, a
// busy server, a cellular gateway) the bytes wait after they were
// acknowledged: in the receiver's socket buffer and in the relays between,
// where the device's TCP_INFO does not see them. What the device can see
// is when the server has read them: the server answers a websocket ping
// when its reader reaches it, after every byte written before the ping.
// So the writer pings now and then while it sends, each ping marks the
// bytes written before it, and each pong confirms them. Unconfirmed bytes
// are in flight, wherever they wait; the writer stops taking frames while
// they exceed the window:
//
//	window = max(paceFloor, rate × (2 × min RTT + target))
//
// rate being the best recent delivery rate (confirmed bytes per second
// between pongs). One round trip keeps the path full; the other covers
// the bytes the server has read whose pong is still on its way back,
// which the window counts as in flight. On a fast path the window opens to whatever keeps the
// path full (rate grows with it, so the window grows again after a slow
// spell); on a slow one it holds about target's worth of bytes.
//
// A server that never answers pings is not paced: the window applies
// while the first pong is on its way for up to paceFirstWait, then only
// once a pong has come back, and stops applying when none has come for
// paceGiveUp (the link's own timeouts judge such a server). A local proxy that answers pings itself (Mender client 3.x)
// makes the path look fast: no pacing, as before.
type pacer struct {
	target time.Duration // 0: no pacing

	mu       sync.Mutex
	sent     int64      // bytes written on the connection
	acked    int64      // bytes the server has read (confirmed by a pong)
	ackedAt  time.Time  // when acked last moved
	probes   []pingMark // pings not yet answered, oldest first
	answered bool       // a pong came back on this connection
	lastPing time.Time
	minRTT   time.Duration
	window   int64
	// A rate sample spans at least paceSpan: pongs come every few
	// milliseconds, and the relays between deliver in bursts.
	spanAt    time.Time
	spanAcked int64
	rates     [paceRates]float64 // recent delivery-rate samples, bytes/s
	ri        int
	opened    chan struct{} // signalled by every pong
}

type pingMark struct {
	at   time.Time
	mark int64 // sent when the ping went out
}

const (
	// paceFloor is the least window: two full pty reads, so that a slow
	// path keeps busy while a pong is on its way.
	paceFloor = 8 << 10
	// paceInitial is the window until the first rate sample.
	paceInitial = 64 << 10
	// paceProbeGap is the least time between pings sent to measure, while
	// output flows: at most 66 a second, 6 bytes each and a 2-byte pong
	// (under 1 % of a 100 KB/s link). Several are out at once, so the
	// window reopens as the server reads, not once per round trip.
	paceProbeGap = 15 * time.Millisecond
	// paceMaxProbes bounds the pings out at once.
	paceMaxProbes = 64
	// paceSpan is the least time a rate sample spans.
	paceSpan = 50 * time.Millisecond
	// paceRates is how many recent samples the rate is the best of: a
	// second or so, enough to ride over one idle moment.
	paceRates = 8
	// paceFrameMin is the smallest frame the pacer asks for.
	paceFrameMin = 1 << 10
	// paceFrameAny: a frame hint this big is no hint (a pty read is
	// at most 32 KiB).
	paceFrameAny = 32 << 10
	// paceFirstWait is how long the first pong may take before the link
	// goes unpaced: paceInitial in flight takes 3 s at 20 KB/s.
	paceFirstWait = 3 * time.Second
	// paceGiveUp stops pacing while no pong came back for this long.
	paceGiveUp = 30 * time.Second
)

func newPacer(target time.Duration) *pacer {
	return &pacer{target: target, window: paceInitial, opened: make(chan struct{}, 1)}
}

// allow reports whether the writer may take another frame.
func (p *pacer) allow(now time.Time) bool {
	if p == nil || p.target <= 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.probes) > 0 {
		// A server that never answered within paceFirstWait, or stopped
		// answering for paceGiveUp, is written to unpaced.
		waited := now.Sub(p.probes[0].at)
		if (!p.answered && waited > paceFirstWait) || waited > paceGiveUp {
			return true
		}
	}
	return p.sent-p.acked < p.window
}

// wrote counts n bytes written on the connection.
func (p *pacer) wrote(n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.sent += int64(n)
	p.mu.Unlock()
}

// probeDue reports whether the writer should ping now to measure: bytes
// went out since the last ping, and the gap has passed, or the writer is
// held back (the pongs then reopen the window, and the
// last one must confirm every byte).
func (p *pacer) probeDue(now time.Time, held bool) bool {
	if p == nil || p.target <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	last := p.acked
	n := len(p.probes)
	if n > 0 {
		last = p.probes[n-1].mark
	}
	if p.sent == last || n >= paceMaxProbes {
		return false
	}
	// Even with none out, not sooner than the gap: a writer that drains
	// its queue after every frame (a fast path) would otherwise ping per
	// frame, and each ping and pong costs a write, a read and a wake-up
	// on both ends (with gorilla/websocket it also cost a few hundred
	// bytes of garbage: a 50 MiB download made 1.2 MB of it).
	return held || now.Sub(p.lastPing) >= paceProbeGap
}

// pinged records a ping written at now (a probe or the keep-alive).
func (p *pacer) pinged(now time.Time) {
	if p == nil || p.target <= 0 {
		return // unpaced: no pong will be matched, so keep no record
	}
	p.mu.Lock()
	if len(p.probes) >= 4*paceMaxProbes {
		// A server that stopped answering: the oldest record goes, so
		// the keep-alive cannot grow the list for ever.
		p.probes = append(p.probes[:0], p.probes[1:]...)
	}
	p.probes = append(p.probes, pingMark{at: now, mark: p.sent})
	p.lastPing = now
	p.mu.Unlock()
}

// ponged takes a pong read at now: it answers the oldest ping. It
// returns the largest frame the path wants now (0: any size).
func (p *pacer) ponged(now time.Time) (frameHint int) {
	if p == nil || p.target <= 0 {
		return 0
	}
	p.mu.Lock()
	if len(p.probes) == 0 {
		p.mu.Unlock()
		return p.frameHint() // unsolicited (a heartbeat pong): nothing to confirm
	}
	pr := p.probes[0]
	p.probes = append(p.probes[:0], p.probes[1:]...)
	rtt := now.Sub(pr.at)
	if p.minRTT == 0 || rtt < p.minRTT {
		p.minRTT = rtt
	}
	if pr.mark > p.acked {
		p.acked, p.ackedAt = pr.mark, now
	}
	if !p.answered {
		p.answered, p.spanAt, p.spanAcked = true, now, p.acked
	}
	// A span in which the output paused measures the output, not the
	// path; the rate is the best recent sample, so such spans drop out.
	if dt := now.Sub(p.spanAt); dt >= max(paceSpan, p.minRTT) {
		if d := p.acked - p.spanAcked; d > 0 {
			p.rates[p.ri] = float64(d) / dt.Seconds()
			p.ri = (p.ri + 1) % paceRates
		}
		p.spanAt, p.spanAcked = now, p.acked
	}
	if rate := p.rate(); rate > 0 {
		p.window = max(paceFloor, int64(rate*(2*p.minRTT+p.target).Seconds()))
	}
	hint := p.frameHint()
	p.mu.Unlock()
	select {
	case p.opened <- struct{}{}:
	default:
	}
	return hint
}

// frameHint is an eighth of the window: the writer lets one frame past
// a full window, and a keystroke's echo waits behind one frame of the
// flood in the fair queue, so frames must be small beside the window.
// p.mu is held.
func (p *pacer) frameHint() int {
	h := p.window / 8
	if h >= paceFrameAny {
		return 0
	}
	return int(max(h, paceFrameMin))
}

// rate is the best recent delivery rate; 0 before the first sample.
func (p *pacer) rate() float64 {
	r := 0.0
	for _, s := range p.rates {
		r = max(r, s)
	}
	return r
}

// inFlight is what the pacer counts as on its way, and the window.
func (p *pacer) inFlight() (bytes, window int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent - p.acked, p.window
}
