package auth

import (
	"sync"

	"github.com/godbus/dbus/v5"
)

// maxQueuedSignals bounds the signals waiting for the event loop. Only a
// misbehaving peer floods us; we then drop the oldest and resynchronise by
// asking the bus and the service for the current state.
const maxQueuedSignals = 64

const (
	busDriverName          = "org.freedesktop.DBus"
	signalNameOwnerChanged = "org.freedesktop.DBus.NameOwnerChanged"
)

// signalQueue is the connection's godbus SignalHandler. godbus's default
// handler hands signals to goroutines when a channel is full, which can
// reorder them; the "newest wins" rule needs their order, so this handler
// keeps them in arrival order in a bounded queue.
type signalQueue struct {
	notify chan struct{} // capacity 1: "the queue is not empty"

	mu       sync.Mutex
	queue    []*dbus.Signal
	overflow bool
	closed   bool
}

func newSignalQueue() *signalQueue {
	return &signalQueue{notify: make(chan struct{}, 1)}
}

// DeliverSignal is called by godbus's reader goroutine, in arrival order;
// it must not block.
func (q *signalQueue) DeliverSignal(_, _ string, sig *dbus.Signal) {
	if sig.Name != SignalJwtTokenStateChange && sig.Name != signalNameOwnerChanged {
		return // NameAcquired and the like
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if len(q.queue) >= maxQueuedSignals {
		copy(q.queue, q.queue[1:])
		q.queue = q.queue[:len(q.queue)-1]
		q.overflow = true
	}
	q.queue = append(q.queue, sig)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Terminate is called by godbus when the connection closes.
func (q *signalQueue) Terminate() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.queue = nil
}

// take returns the queued signals in arrival order and whether some were
// dropped since the last call.
func (q *signalQueue) take() ([]*dbus.Signal, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	sigs, overflow := q.queue, q.overflow
	q.queue, q.overflow = nil, false
	return sigs, overflow
}
