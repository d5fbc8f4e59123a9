package link

import (
	"testing"
	"time"
)

// drive plays a path that drains rate bytes/s after a base round trip
// against the pacer for d, with a sender that always has output: it
// returns the pacer and the worst bytes in flight seen.
func drive(t *testing.T, target time.Duration, rate float64, base, d time.Duration) (*pacer, int64) {
	t.Helper()
	p := newPacer(target)
	now := time.Unix(1000, 0)
	const frame = 1024
	var worst int64
	var readAt float64 // seconds: when the server will have read all sent bytes
	type pending struct {
		at  time.Time
		due time.Time
	}
	start := now
	// The link's first ping, before any frame.
	p.pinged(now)
	pongs := []pending{{at: now, due: now.Add(base)}}
	for now.Sub(start) < d {
		for len(pongs) > 0 && !pongs[0].due.After(now) {
			p.ponged(pongs[0].due)
			pongs = pongs[1:]
		}
		// The output could go at 64 MB/s.
		for i := 0; i < 64 && p.allow(now); i++ {
			p.wrote(frame)
			el := now.Sub(start).Seconds()
			readAt = max(readAt, el+base.Seconds()/2) + frame/rate
		}
		if p.probeDue(now, !p.allow(now)) {
			p.pinged(now)
			due := start.Add(time.Duration(readAt*float64(time.Second)) + base/2)
			if due.Before(now.Add(base)) {
				due = now.Add(base)
			}
			pongs = append(pongs, pending{at: now, due: due})
		}
		if b, _ := p.inFlight(); b > worst && now.Sub(start) > d/2 {
			// in flight, as the pacer counts it (the server read some)
			worst = b
		}
		now = now.Add(time.Millisecond)
	}
	return p, worst
}

// The window settles at what the path drains in about the target, at any
// rate: few bytes in flight on a slow path, many on a fast one.
func TestPacerWindowFollowsThePath(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rate   float64
		base   time.Duration
		lo, hi int64
	}{
		{"100 KB/s", 100e3, time.Millisecond, 12e3, 22e3},
		{"100 KB/s, 100 ms round trip", 100e3, 100 * time.Millisecond, 20e3, 40e3},
		{"10 MB/s", 10e6, time.Millisecond, 1.2e6, 2.2e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, worst := drive(t, 150*time.Millisecond, tc.rate, tc.base, 10*time.Second)
			_, w := p.inFlight()
			if w < tc.lo || w > tc.hi {
				t.Errorf("window %d bytes, want %d..%d", w, tc.lo, tc.hi)
			}
			if worst > w+w/4 {
				t.Errorf("%d bytes in flight past a %d-byte window", worst, w)
			}
		})
	}
}

// No pong, no pacing: a server that does not answer the first ping within
// paceFirstWait is written to as before; one that stops answering for
// paceGiveUp is too.
func TestPacerNeedsPongs(t *testing.T) {
	p := newPacer(150 * time.Millisecond)
	now := time.Unix(1000, 0)
	p.wrote(1 << 20)
	p.pinged(now)
	if p.allow(now) {
		t.Fatal("unpaced while the first pong is on its way")
	}
	if !p.allow(now.Add(paceFirstWait + time.Second)) {
		t.Fatal("paced though the first pong never came")
	}
	p.ponged(now.Add(time.Millisecond))
	p.wrote(1 << 20)
	p.pinged(now)
	if p.allow(now.Add(time.Second)) {
		t.Fatal("a full window allowed more")
	}
	if !p.allow(now.Add(paceGiveUp + time.Second)) {
		t.Fatal("still paced after no pong for paceGiveUp")
	}
	var off *pacer
	if !off.allow(now) || off.probeDue(now, true) {
		t.Fatal("a nil pacer paces")
	}
	if !newPacer(0).allow(now) {
		t.Fatal("target 0 paces")
	}
}

// The frame hint is an eighth of the window on a slow path, none on a fast
// one.
func TestPacerFrameHint(t *testing.T) {
	slow, _ := drive(t, 150*time.Millisecond, 100e3, time.Millisecond, 5*time.Second)
	fast, _ := drive(t, 150*time.Millisecond, 10e6, time.Millisecond, 5*time.Second)
	slow.mu.Lock()
	hs := slow.frameHint()
	slow.mu.Unlock()
	fast.mu.Lock()
	hf := fast.frameHint()
	fast.mu.Unlock()
	if hs < paceFrameMin || hs > 4<<10 {
		t.Errorf("slow path frame hint %d, want %d..%d", hs, paceFrameMin, 4<<10)
	}
	if hf != 0 {
		t.Errorf("fast path frame hint %d, want 0 (any)", hf)
	}
}

// Pings that are never answered leave a bounded record: unpaced none, and
// paced at most a few hundred however long the link lives.
func TestPacerPingRecordBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	off, on := newPacer(0), newPacer(150*time.Millisecond)
	for i := range 10000 {
		at := now.Add(time.Duration(i) * 50 * time.Second)
		off.pinged(at)
		on.pinged(at)
	}
	if n := len(off.probes); n != 0 {
		t.Errorf("unpaced: %d pings kept", n)
	}
	if n := len(on.probes); n > 4*paceMaxProbes {
		t.Errorf("paced: %d unanswered pings kept", n)
	}
}
