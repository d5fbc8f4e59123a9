//go:build !nometrics

package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Steps in which the counters that follow typing move. Anyone who can
// scrape the endpoint could otherwise poll a byte or frame counter and
// recover the length and rhythm of what a remote administrator types,
// a password at a hidden prompt included: one keystroke is one frame of a
// byte or so each way.
const (
	terminalBytesStep = 1024 // tether_terminal_bytes_total: whole KiB
	linkFramesStep    = 64   // tether_link_frames_total
)

// coarseCounter exposes a count only in whole steps; it keeps the exact
// total internally, so nothing is lost, only delayed to the next step.
type coarseCounter struct {
	c     prometheus.Counter
	step  uint64
	total atomic.Uint64
}

func newCoarse(c prometheus.Counter, step uint64) *coarseCounter {
	return &coarseCounter{c: c, step: step}
}

func (k *coarseCounter) add(n uint64) {
	now := k.total.Add(n)
	if steps := now/k.step - (now-n)/k.step; steps > 0 {
		k.c.Add(float64(steps * k.step))
	}
}
