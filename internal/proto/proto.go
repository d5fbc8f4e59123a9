// Package proto is the contract between the router (internal/session) and
// the protocols it dispatches to, each a package of its own under
// internal/proto/<name>. The router knows a protocol only through this
// interface; a protocol knows the link only through a Sender, so no
// protocol imports the link or the router.
package proto

import (
	"context"

	"github.com/tether-agent/tether/internal/wire"
)

// Sender sends frames for one router session.
type Sender interface {
	// Send queues m behind the session's earlier frames. It waits while
	// the session's outbound queue is full (back-pressure) and returns
	// ctx's error if ctx ends first, or an error once the session's queue
	// is closed. It never blocks the link's read loop: protocols call it
	// from their own goroutines, or with a context that is already bounded.
	Send(ctx context.Context, m *wire.ProtoMsg) error
}

// Protocol is one protocol of the ProtoMsg envelope (hdr.proto), compiled
// in and enabled.
type Protocol interface {
	// Number is the hdr.proto value it serves (wire.Proto*).
	Number() uint16
	// Open starts the protocol's state for the router session sid, on the
	// first message of that session for this protocol. It is called from
	// the link's read loop and must not block.
	Open(sid string, out Sender) Session
}

// Session is a protocol's state within one router session.
type Session interface {
	// Handle takes one inbound message of the session, in arrival order.
	// It is called from the link's read loop and must not block: slow
	// work (disk, dials, commands) runs in the session's own goroutines
	// behind a bounded queue.
	Handle(m *wire.ProtoMsg)
	// Close ends the session (control close, session timeout, shutdown):
	// it stops its work and frees everything it holds without waiting for
	// slow I/O. Calling it more than once is harmless.
	Close()
}
