// Package proto is the contract between the router (internal/session) and
// the protocols it dispatches to, each a package of its own under
// internal/proto/<name>. The router knows a protocol only through this
// package; a protocol knows the link only through a Sender, so no
// protocol imports the link or the router. A protocol imports neither
// another protocol nor internal/config: it owns its configuration
// section (Config, DefaultConfig, Validate, FromConfig), and
// TestProtocolsStandApart keeps it so.
//
// There are two contracts, on purpose.
//
// Protocol / Session / Sender (file transfer, port forwarding, the Mender
// client): a protocol's state lives in a router session, one sid, and
// ends with it (control close, idle timeout, link drop, shutdown). Open
// and Handle are called from the read loop and never block; Session.Close
// stops the session's work without waiting; Sender queues frames with
// back-pressure. Protocol.Close ends the protocol at shutdown and waits
// for every goroutine it started (a Group keeps the books), so that
// nothing a protocol starts outlives the router.
//
// Admitted / Table / Lease / AdmittedSession (the terminal): a shell is
// not part of a router session, for two reasons. Its sessions count
// against the device's limits (per user, in total, with eviction and
// probes of silent peers), which must be decided over all of them at
// once under one lock, so the router keeps the table and the terminal
// asks it for a place (Table.Admit) and holds a Lease. And its sessions
// outlive link drops: a router session dies with the link because the
// server forgets its sid, a shell is detached instead and its user may
// reattach it from a new terminal, so its place is keyed by the table,
// its queue is a share of the device's output budget handed out with the
// lease (a concrete *mux.Queue, for the pooled-buffer and control-frame
// paths a Sender does not offer), and its health check counts link-up
// time. The router owns what follows from the table (expiry, stop on
// token loss and shutdown, reattach); the session owns its pty and
// processes, and says Done when its goroutines have ended, which the
// router's Shutdown waits for.
//
// A protocol that needed limits across sessions, or sessions that
// survive a link drop, would use the second contract; every other one
// uses the first. docs/architecture.md says the same at more length.
package proto

import (
	"context"
	"errors"
	"time"

	"github.com/tether-agent/tether/internal/mux"
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

// FrameSender is a Sender that also takes frames the protocol encoded
// itself into a reused buffer (a download's chunks), so that a bulk
// transfer makes no garbage per frame. The router's senders implement it;
// a protocol falls back to Send when its Sender does not.
type FrameSender interface {
	Sender
	// SendFrame queues b, one encoded frame that is a window into a
	// buffer of held bytes, behind the session's earlier frames; it
	// waits and fails as Send does. release is called once b is written
	// (the buffer may be reused from then on); never when SendFrame
	// fails or the frame is dropped unsent, which leaves the buffer to
	// the garbage collector.
	SendFrame(ctx context.Context, b []byte, held int, release func()) error
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
	// Close ends the protocol: it closes the sessions still open, stops
	// whatever else it started (commands, dials, background work) and
	// waits until every goroutine it started has ended. The router calls
	// it once, when it shuts down, after closing its sessions; nothing
	// is opened after. A Group does the bookkeeping.
	Close()
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

// Admitted is a protocol whose sessions count against the device's
// session limits: the terminal (proto 1). Such a session is not part of a
// router session: it outlives link drops and the router owns its place in
// the table by sid, its admission, its idle and absolute expiry and its
// stop on token loss or shutdown; the protocol owns the rest.
type Admitted interface {
	// Number is the hdr.proto value it serves (wire.Proto*).
	Number() uint16
	// Handle takes a message whose sid has no session in the table; the
	// protocol may open one with t.Admit. Messages of a live session go
	// to its Handle. Called from the link's read loop; must not block.
	Handle(t Table, m *wire.ProtoMsg)
}

// Table is the router's session table as an Admitted protocol sees it.
type Table interface {
	// Admit gives a new session sid of user its place in the table, or
	// refuses it with ErrUserLimit, ErrTotalLimit, ErrExists or ErrClosed.
	// open builds the session around its lease; it runs under the
	// table's lock, so it must only build, not start. A session of the
	// user that gives up its slot is stopped after open returns.
	//
	// When the user has a detached session the table hands that one over
	// instead: it is re-keyed to sid, its Attach is called with m (the
	// "new"), open is not, and done gets it with reattached true. When
	// the limits would refuse the session or evict one, the user's
	// sessions are first probed (their peers pinged); the decision then
	// waits up to the probe's grace, and done runs later on another
	// goroutine, with the messages for sid that arrived meanwhile
	// delivered to the session after done returns. done runs exactly
	// once; s is nil when err is set.
	Admit(sid, user string, m *wire.ProtoMsg, open func(Lease) AdmittedSession, done func(s AdmittedSession, reattached bool, err error))
	// StopUser stops every session of user.
	StopUser(user, reason string)
	// Reply queues a frame that belongs to no live session (or whose
	// session's queue is closed). It never blocks; a frame that does not
	// fit is dropped.
	Reply(m *wire.ProtoMsg)
}

// Lease is an admitted session's place in the table.
type Lease interface {
	// Queue is the session's outbound queue, its share of the output
	// budget.
	Queue() *mux.Queue
	// UpTime is the link-up time, which health checks count.
	UpTime() time.Duration
	// UpState is UpTime and whether the link is up now (link-up time
	// stands still while it is down).
	UpState() (time.Duration, bool)
	// Wake tells the janitor that the session's next due time moved
	// closer (a ping left, so its pong deadline runs). It never blocks.
	Wake()
	// Active records input from the peer: idle expiry counts from the
	// latest.
	Active()
	// Lost says the session's peer is gone (its health check failed, or
	// the server ended its side without the user asking). It reports
	// true when the table keeps the session detached for a later
	// reattach; false when detached sessions are off, and the caller
	// ends the session as before.
	Lost(reason string) bool
	// Release frees the slot at once (the session is stopping or ended
	// by itself). Calling it more than once is harmless.
	Release()
	// Done says every goroutine of the session has ended; the router's
	// shutdown waits for it. Call it once.
	Done()
	// ShuttingDown is closed when the daemon shuts down.
	ShuttingDown() <-chan struct{}
}

// AdmittedSession is the protocol's side of an admitted session.
type AdmittedSession interface {
	// Handle takes one inbound message of the session, in arrival order,
	// from the link's read loop; it must not block.
	Handle(m *wire.ProtoMsg)
	// Stop asks the session to end, for reason (a Reason* value), with
	// notice ("" = none) for the peer, tearing its processes down with
	// grace per step. It releases the lease and returns at once; the
	// first request wins.
	Stop(reason, notice string, grace time.Duration)
	// Supervise runs on every janitor sweep (the session's health check).
	// It returns how long of link-up time until it is next due (0: nothing
	// is while nothing changes) and whether it queued a ping; a ping may
	// go up to early before it is due, so that sessions share wakeups.
	Supervise(early time.Duration) (next time.Duration, pinged bool)
	// Detach says the table deems the session's peer gone. With discard
	// false (the link dropped: a server that kept the user's connection
	// may still answer) output is still sent; with discard true it goes
	// only to the replay buffer, and a sender blocked on a full queue is
	// let go. Health pings continue but a missing pong ends nothing.
	Detach(discard bool)
	// Attach gives a detached session a peer again. m nil: its own peer
	// answered (same sid). Otherwise m is a new peer's "new" and sid the
	// session id the session takes from now on: it answers m, applies
	// its terminal size and sends what the peer missed first.
	Attach(sid string, m *wire.ProtoMsg)
	// Probe sends a health ping now, so the table can tell whether the
	// peer still answers.
	Probe()
}

// Sooner returns the earlier of two delays, where 0 means none; a delay
// that is due already counts as a millisecond, so a timer never spins.
func Sooner(a, b time.Duration) time.Duration {
	switch {
	case b <= 0:
		return a
	case a <= 0 || b < a:
		return max(b, time.Millisecond)
	}
	return a
}

// Admission refusals; the protocol answers its peer in its own words.
var (
	ErrUserLimit  = errors.New("the user's session limit is reached")
	ErrTotalLimit = errors.New("the device's session limit is reached")
	ErrClosed     = errors.New("device agent shutting down")
	ErrExists     = errors.New("session exists")
)

// Reasons a session ends; they are the metrics label values too.
const (
	ReasonUser            = "user"
	ReasonStop            = "stop"
	ReasonIdleExpired     = "idle_expired"
	ReasonAbsoluteExpired = "absolute_expired"
	ReasonShellExit       = "shell_exit"
	ReasonHealthTimeout   = "health_timeout"
	ReasonTokenCleared    = "token_cleared"
	ReasonShutdown        = "shutdown"
	ReasonEvicted         = "evicted"
	ReasonStartFailed     = "start_failed"
	// ReasonDetachedExpired: nobody reattached it within the detached
	// timeout.
	ReasonDetachedExpired = "detached_expired"
	// ReasonMemoryLimit: the session reached its memory ceiling
	// (Sessions.MemoryMax) and was killed whole.
	ReasonMemoryLimit = "memory_limit"
)

// Why a session is detached; they are the metrics label values too.
const (
	DetachLinkDown  = "link_down"  // the device's link dropped
	DetachNoAnswer  = "no_answer"  // its peer did not answer a probe
	DetachHealth    = "health"     // its peer stopped answering pings
	DetachByteLimit = "byte_limit" // the server's recording cut it
	DetachUserGone  = "user_gone"  // the server said the user disconnected
)

// DetachRestored: the session comes from a previous run of the daemon
// (internal/handover) and waits for its user's next terminal.
const DetachRestored = "restored"

// Restorer is the Table of a router that can take back sessions from a
// previous run of the daemon and hand its own to the next.
type Restorer interface {
	Table
	// Restore puts a session from a previous run in the table, detached
	// (its output goes to its replay buffer only), for its user's next
	// terminal; open builds it as for Admit. Its expiry clocks go on from
	// r. It fails with ErrExists or ErrClosed.
	Restore(r Restored, open func(Lease) AdmittedSession) error
}

// Restored is a session from a previous run and its clocks.
type Restored struct {
	SessionID string
	UserID    string
	Created   time.Time // the absolute timeout counts from it
	// IdleLeft is what was left of the idle timeout (0: it starts over);
	// DetachedLeft what was left of the detached timeout (0: all of it).
	IdleLeft     time.Duration
	DetachedLeft time.Duration
}

// HandOverer is an AdmittedSession that can go on in the next run of the
// daemon: HandOver ends the session's work here without ending what it
// runs, and returns what the next run needs (nil: it cannot, or it ended
// meanwhile).
type HandOverer interface {
	HandOver() any
}

// HandedOver is a session given up for the next run, with its clocks.
type HandedOver struct {
	SessionID string
	UserID    string
	Created   time.Time
	Detached  bool
	// What was left of each clock (0: it does not run).
	IdleLeft, AbsoluteLeft, DetachedLeft time.Duration
	// State is what the session's HandOver returned.
	State any
}
