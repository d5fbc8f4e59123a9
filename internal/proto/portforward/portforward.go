// Package portforward is port forwarding (proto 3, docs/protocol.md §6): a
// peer asks the device to dial a TCP or UDP destination and the bytes
// travel both ways in `forward` messages, each answered by an `ack`.
//
// The wire is upstream's; the behaviour is bounded where upstream's is
// not: dials run off the read loop with a timeout, connections are
// limited per session, in total and by the descriptor budget, a peer's
// unacknowledged data and its stray messages cost at most bounded bytes
// per connection, session and device, identifiers and hosts are bounded
// in length, the sockets belong to the configured account, and an allow
// list restricts the destinations.
package portforward

import (
	"context"
	"errors"
	"fmt"
	"github.com/tether-agent/tether/internal/identity"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/fdbudget"
	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// Message types of proto 3.
const (
	TypeNew     = "new"
	TypeForward = "forward"
	TypeAck     = "ack"
	TypeStop    = "stop"
	TypeError   = "error"
)

// Values of NewBody.Protocol.
const (
	ProtoTCP = "tcp"
	ProtoUDP = "udp"
)

// Upstream's error texts; peers may match them.
const (
	ErrTextInvalid     = "invalid port-forward message: missing connection_id, remote_port or protocol"
	ErrTextUnknownType = "unknown message type"
	ErrTextUnknownConn = "unknown connection"
)

// Reasons a `new` is denied (the metrics label).
const (
	DenyAllowList    = "allow_list"
	DenySessionLimit = "session_limit"
	DenyTotalLimit   = "total_limit"
	DenyFDLimit      = "fd_limit"
)

// Kinds of peer messages that are answered with an error or ignored, and
// counted (the metrics label).
const (
	IgnoredStrayAck    = "stray_ack"
	IgnoredUnknownConn = "unknown_connection"
	IgnoredUnknownType = "unknown_type"
	IgnoredOverflow    = "overflow"
	IgnoredDuplicate   = "duplicate_new"
	IgnoredInvalid     = "invalid"
	IgnoredTooLong     = "too_long"
	IgnoredReplyDrop   = "reply_dropped"
)

// NewBody is the body of a peer's `new`.
type NewBody struct {
	RemoteHost *string `msgpack:"remote_host"`
	RemotePort *uint16 `msgpack:"remote_port"`
	Protocol   *string `msgpack:"protocol"`
}

// ErrorBody is the body of an `error`.
type ErrorBody struct {
	Error       string `msgpack:"err"`
	MessageType string `msgpack:"msgtype,omitempty"`
}

// Recorder is told what happens, for metrics. Directions: "in" is from
// the peer to the destination, "out" from the destination to the peer.
//
// The protocol owns the interface; the collectors that implement it stay
// in internal/metrics (portforward_prom.go), which does not import this
// package. Moving them here would add arrows (this package to
// client_golang and to the metrics package's registry and coarse
// counters) and the nometrics build tag; as it is, neither package knows
// the other and the daemon hands the recorder over (Deps.Recorder).
type Recorder interface {
	PortForwardOpened(proto string)
	PortForwardClosed(proto string)
	PortForwardBytes(direction string, n int)
	PortForwardDenied(reason string)
	PortForwardIgnored(kind string)
}

// Options configure the protocol. Zero values take the defaults noted.
type Options struct {
	Log *slog.Logger
	// DialTimeout bounds each dial (10 s).
	DialTimeout time.Duration
	// IdleTimeout ends a connection that read nothing from its
	// destination for this long (600 s, upstream's).
	IdleTimeout time.Duration
	// MaxPerSession and MaxTotal limit open connections (128, 256).
	MaxPerSession, MaxTotal int
	// FDs is the descriptor budget shared with the other protocols: each
	// connection takes one for its socket, and a `new` that cannot get
	// one is refused (nil: no budget).
	FDs *fdbudget.Budget
	// Identity is the account whose sockets the connections are (nil:
	// the daemon's own): the kernel records a socket's owner when it is
	// created, and owner-matching firewall rules and /proc/net/tcp go by
	// it.
	Identity *identity.Identity
	// Window is how many device forwards may await the peer's ack (8).
	Window int
	// ReadSize is the largest forward body read from a TCP destination
	// (16 KiB). UDP datagrams are read whole.
	ReadSize int
	// Allow restricts destinations; nil allows any (as upstream), an
	// empty non-nil list none.
	Allow []Rule
	// Resolver resolves host names when Allow is set (net.DefaultResolver).
	Resolver *net.Resolver
	Recorder Recorder
}

// maxPending bounds the peer's data waiting to be written to one
// destination. A peer that honours the acks never has more than its own
// window there; one that does not gets an error once this is exceeded.
const maxPending = 128 << 10

// Beyond pendingFloor bytes, a connection's waiting data draws on one
// pool of maxPendingAll bytes shared by every connection on the device,
// so that the sum stays bounded however many connections are open
// (MaxTotal × maxPending would be 32 MiB) while a connection that honours
// the acks (mender-cli keeps one 4 KiB forward in flight) is never
// refused because others overran theirs.
const (
	pendingFloor  = 16 << 10
	maxPendingAll = 4 << 20
)

// maxIDLen bounds a connection_id, as the router bounds the session id:
// real ones are 36-character UUIDs, and each id is kept in the table,
// in every log line and in error replies.
const maxIDLen = 128

// maxHostLen bounds remote_host: a DNS name has at most 253 characters,
// an address literal fewer.
const maxHostLen = 253

// maxReplyBytes bounds the answers of one session waiting for the link
// (errors, stops): a peer that floods bad messages and reads slowly
// loses answers, not memory.
const maxReplyBytes = 8 << 10

// maxUDP is the largest UDP payload.
const maxUDP = 65535

// flushTimeout bounds how long the data a peer sent before its `stop`
// may take to reach the destination.
const flushTimeout = 5 * time.Second

// Protocol is port forwarding, shared by every router session.
type Protocol struct {
	o       Options
	acl     *acl
	log     *slog.Logger
	total   atomic.Int64
	pending atomic.Int64 // bytes drawn from the shared pool (maxPendingAll)
	// g owns the sessions and every goroutine: each session's reply
	// sender, each connection's dialer-writer and reader.
	g proto.Group

	// The server decides how often these lines are written: each kind
	// is rate-limited on its own.
	logRefused logging.RateLimit // messages refused for their content
	logNew     logging.RateLimit // connections asked for
	logFailed  logging.RateLimit // dials, reads and writes that failed
	logClosed  logging.RateLimit // connections ended (debug)
}

// New builds the protocol.
func New(o Options) *Protocol {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 600 * time.Second
	}
	if o.MaxPerSession <= 0 {
		o.MaxPerSession = DefaultMaxPerSession
	}
	if o.MaxTotal <= 0 {
		o.MaxTotal = DefaultMaxTotal
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.ReadSize <= 0 {
		o.ReadSize = DefaultReadSize
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Recorder == nil {
		o.Recorder = nopRecorder{}
	}
	p := &Protocol{o: o, log: o.Log}
	if o.Allow != nil {
		p.acl = &acl{rules: o.Allow}
	}
	return p
}

// Default connection limits: what a browser on a device's web UI or a
// parallel download opens through one forward fits in a session.
const (
	DefaultMaxPerSession = 128
	DefaultMaxTotal      = 256
)

// Number is proto 3.
func (p *Protocol) Number() uint16 { return wire.ProtoPortForward }

// Active is the number of open connections of every session.
func (p *Protocol) Active() int { return int(p.total.Load()) }

// Open starts the protocol's state for one router session.
func (p *Protocol) Open(sid string, out proto.Sender) proto.Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{p: p, sid: sid, out: out, ctx: ctx, cancel: cancel,
		wake: make(chan struct{}, 1), conns: make(map[string]*conn)}
	if !p.g.Track(s) || !p.g.Go(s.sendReplies) {
		s.Close() // the protocol is closed: the session takes nothing
	}
	return s
}

// Close ends every session's connections and waits until all their
// goroutines have ended (proto.Protocol).
func (p *Protocol) Close() { p.g.Close() }

// session is the protocol's state in one router session.
type session struct {
	p      *Protocol
	sid    string
	out    proto.Sender
	ctx    context.Context
	cancel context.CancelFunc
	// replies holds what Handle answers (it must not block on the
	// link), at most maxReplyBytes; one goroutine sends them in order,
	// woken by wake.
	rmu          sync.Mutex
	replies      []*wire.ProtoMsg
	repliesBytes int
	wake         chan struct{}

	mu     sync.Mutex
	conns  map[string]*conn
	closed bool
}

func (s *session) sendReplies() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		}
		for {
			s.rmu.Lock()
			if len(s.replies) == 0 {
				s.rmu.Unlock()
				break
			}
			m := s.replies[0]
			s.replies[0] = nil
			s.replies = s.replies[1:]
			s.rmu.Unlock()
			err := s.out.Send(s.ctx, m)
			// The bytes count until the frame is handed on, so that the
			// one waiting in Send is within the bound too.
			s.rmu.Lock()
			s.repliesBytes -= replySize(m)
			s.rmu.Unlock()
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				if s.p.logClosed.Allow(time.Now()) {
					s.p.log.Debug("port-forward reply not sent", "session_id", s.sid, "type", m.Header.MsgType, "error", err,
						"suppressed", s.p.logClosed.TakeSuppressed())
				}
			}
		}
	}
}

// replySize is what a queued answer is counted as: its variable parts
// and the header and frame around them.
func replySize(m *wire.ProtoMsg) int {
	return len(m.Body) + len(m.Header.MsgType) + len(m.Header.SessionID) + len(m.Header.StringProp(wire.PropConnectionID)) + 64
}

// reply queues an answer without blocking; a peer that floods the
// device with bad messages loses answers, not memory.
func (s *session) reply(m *wire.ProtoMsg) {
	n := replySize(m)
	s.rmu.Lock()
	if s.repliesBytes+n > maxReplyBytes {
		s.rmu.Unlock()
		s.p.o.Recorder.PortForwardIgnored(IgnoredReplyDrop)
		return
	}
	s.replies = append(s.replies, m)
	s.repliesBytes += n
	s.rmu.Unlock()
	notify(s.wake)
}

func (s *session) msg(typ, connID string, body []byte) *wire.ProtoMsg {
	h := wire.Header{Proto: wire.ProtoPortForward, MsgType: typ, SessionID: s.sid}
	if connID != "" {
		h.Properties = map[string]interface{}{wire.PropConnectionID: connID}
	}
	return &wire.ProtoMsg{Header: h, Body: body}
}

// errorMsg is upstream's error reply, plus the connection_id when there
// is one (upstream leaves it out, so a peer cannot tell which connection
// failed; a property more is harmless to peers that ignore it).
func (s *session) errorMsg(connID, typ, text string) *wire.ProtoMsg {
	b, _ := msgpack.Marshal(&ErrorBody{Error: text, MessageType: typ})
	return s.msg(TypeError, connID, b)
}

func (s *session) replyError(connID, typ, text string) {
	s.reply(s.errorMsg(connID, typ, text))
}

// Handle takes one message from the read loop; it never blocks.
func (s *session) Handle(m *wire.ProtoMsg) {
	id := m.Header.StringProp(wire.PropConnectionID)
	if len(id) > maxIDLen {
		s.refuse(m, "connection_id", len(id), maxIDLen)
		return
	}
	switch m.Header.MsgType {
	case TypeNew:
		s.handleNew(m, id)
	case TypeForward:
		if c := s.lookup(id); c != nil {
			c.enqueue(m.Body)
			return
		}
		s.unknown(id, m.Header.MsgType)
	case TypeAck:
		if c := s.lookup(id); c != nil {
			c.ack()
			return
		}
		s.unknown(id, m.Header.MsgType)
	case TypeStop:
		s.mu.Lock()
		c := s.conns[id]
		delete(s.conns, id)
		s.mu.Unlock()
		if c == nil {
			s.unknown(id, m.Header.MsgType)
			return
		}
		c.peerStop()
	default:
		s.p.o.Recorder.PortForwardIgnored(IgnoredUnknownType)
		s.replyError(id, m.Header.MsgType, ErrTextUnknownType)
	}
}

// refuse answers a message whose field is too long with the protocol's
// error, without its connection_id: echoing the id would send the server
// its megabyte back, and no real peer owns such a connection.
func (s *session) refuse(m *wire.ProtoMsg, field string, n, limit int) {
	p := s.p
	p.o.Recorder.PortForwardIgnored(IgnoredTooLong)
	if p.logRefused.Allow(time.Now()) {
		p.log.Warn("port-forward: message refused: "+field+" too long", "session_id", s.sid, "type", m.Header.MsgType,
			"connection_id", logging.Clip(m.Header.StringProp(wire.PropConnectionID)), "length", n,
			"suppressed", p.logRefused.TakeSuppressed())
	}
	s.replyError("", m.Header.MsgType, fmt.Sprintf("%s too long: %d bytes, at most %d", field, n, limit))
}

func (s *session) unknown(id, typ string) {
	s.p.o.Recorder.PortForwardIgnored(IgnoredUnknownConn)
	s.replyError(id, typ, ErrTextUnknownConn)
}

func (s *session) lookup(id string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[id]
}

func (s *session) handleNew(m *wire.ProtoMsg, id string) {
	var req NewBody
	if len(m.Body) > 0 {
		if err := wire.DecodeBody(m.Body, &req); err != nil {
			s.p.o.Recorder.PortForwardIgnored(IgnoredInvalid)
			s.replyError(id, TypeNew, err.Error())
			return
		}
	}
	if req.Protocol == nil || *req.Protocol == "" || req.RemoteHost == nil || *req.RemoteHost == "" ||
		req.RemotePort == nil || *req.RemotePort == 0 || id == "" {
		s.p.o.Recorder.PortForwardIgnored(IgnoredInvalid)
		s.replyError(id, TypeNew, ErrTextInvalid)
		return
	}
	if n := len(*req.RemoteHost); n > maxHostLen {
		s.refuseHost(id, n)
		return
	}
	network := *req.Protocol
	if network != ProtoTCP && network != ProtoUDP {
		s.p.o.Recorder.PortForwardIgnored(IgnoredInvalid)
		s.replyError(id, TypeNew, "unknown protocol: "+logging.Clip(network))
		return
	}
	p := s.p
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return
	case s.conns[id] != nil:
		s.mu.Unlock()
		p.o.Recorder.PortForwardIgnored(IgnoredDuplicate)
		s.replyError(id, TypeNew, "connection_id already in use: "+id)
		return
	case len(s.conns) >= p.o.MaxPerSession:
		s.mu.Unlock()
		p.o.Recorder.PortForwardDenied(DenySessionLimit)
		s.replyError(id, TypeNew, fmt.Sprintf("too many port-forward connections in this session (limit %d)", p.o.MaxPerSession))
		return
	}
	if n := p.total.Add(1); n > int64(p.o.MaxTotal) {
		p.total.Add(-1)
		s.mu.Unlock()
		p.o.Recorder.PortForwardDenied(DenyTotalLimit)
		s.replyError(id, TypeNew, fmt.Sprintf("too many port-forward connections on the device (limit %d)", p.o.MaxTotal))
		return
	}
	// The socket's descriptor, taken now so that a refusal is answered
	// here like the other limits, not after a dial.
	if !p.o.FDs.Acquire(1) {
		p.total.Add(-1)
		s.mu.Unlock()
		p.o.Recorder.PortForwardDenied(DenyFDLimit)
		s.replyError(id, TypeNew, "too many open files on the device: port-forward connection refused")
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	c := &conn{s: s, id: id, network: network, host: *req.RemoteHost, port: *req.RemotePort,
		ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), credits: make(chan struct{}, p.o.Window)}
	for i := 0; i < p.o.Window; i++ {
		c.credits <- struct{}{}
	}
	s.conns[id] = c
	s.mu.Unlock()
	if p.logNew.Allow(time.Now()) {
		p.log.Info("port-forward: new", "session_id", s.sid, "connection_id", logging.Clip(id), "protocol", network,
			"remote", logging.Clip(net.JoinHostPort(c.host, strconv.Itoa(int(c.port)))),
			"user_id", logging.Clip(m.Header.StringProp(wire.PropUserID)), "suppressed", p.logNew.TakeSuppressed())
	}
	if !p.g.Go(c.run) {
		c.end(stopNone, "protocol closed")
	}
}

// refuseHost answers a `new` whose remote_host is too long; the id is
// short (checked before) and names the connection.
func (s *session) refuseHost(id string, n int) {
	p := s.p
	p.o.Recorder.PortForwardIgnored(IgnoredTooLong)
	if p.logRefused.Allow(time.Now()) {
		p.log.Warn("port-forward: message refused: remote_host too long", "session_id", s.sid, "type", TypeNew,
			"connection_id", logging.Clip(id), "length", n, "suppressed", p.logRefused.TakeSuppressed())
	}
	s.replyError(id, TypeNew, fmt.Sprintf("remote_host too long: %d bytes, at most %d", n, maxHostLen))
}

// forget removes c from the table if it is still there.
func (s *session) forget(c *conn) {
	s.mu.Lock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	s.mu.Unlock()
}

// Close ends every connection without `stop` messages, as upstream; the
// goroutines end soon after, and the Protocol's Close waits for them.
func (s *session) Close() {
	s.p.g.Untrack(s)
	s.mu.Lock()
	conns := s.conns
	s.conns, s.closed = map[string]*conn{}, true
	s.mu.Unlock()
	s.cancel()
	for _, c := range conns {
		c.abort()
	}
}

// conn is one forwarded connection.
type conn struct {
	s       *session
	id      string
	network string
	host    string
	port    uint16
	ctx     context.Context
	cancel  context.CancelFunc
	// credits holds one token per forward the device may still send
	// before the peer acks; an ack puts one back.
	credits chan struct{}
	wake    chan struct{}

	mu       sync.Mutex
	nc       net.Conn
	dead     bool // aborted: nc must be closed by whoever sets it
	pending  [][]byte
	pendingN int
	pooled   int         // of pendingN, drawn from the shared pool: max(0, pendingN-pendingFloor)
	stopping atomic.Bool // the peer sent stop: flush, close, answer stop
	ended    sync.Once
	opened   bool
}

func (c *conn) log() *slog.Logger {
	return c.s.p.log.With("session_id", c.s.sid, "connection_id", c.id)
}

// logFailed logs a failed dial, read or write: the server can make
// them fail as often as it likes, and the error may name its host.
func (c *conn) logFailed(msg string, err error) {
	p := c.s.p
	if p.logFailed.Allow(time.Now()) {
		c.log().Info(msg, "error", logging.Clip(err.Error()), "suppressed", p.logFailed.TakeSuppressed())
	}
}

// enqueue takes peer data for the destination. It is bounded: a peer
// that ignores the acks gets an error and the connection ends.
func (c *conn) enqueue(b []byte) {
	p := c.s.p
	c.mu.Lock()
	if c.dead {
		// Ended between the lookup and now: nothing will write it.
		c.mu.Unlock()
		return
	}
	n := c.pendingN + len(b)
	text := ""
	if n > maxPending {
		text = fmt.Sprintf("too much unacknowledged data for connection (limit %d bytes)", maxPending)
	} else if need := max(0, n-pendingFloor) - c.pooled; need > 0 {
		if p.pending.Add(int64(need)) > maxPendingAll {
			p.pending.Add(-int64(need))
			text = fmt.Sprintf("too much unacknowledged port-forward data on the device (limit %d bytes)", maxPendingAll)
		} else {
			c.pooled += need
		}
	}
	if text != "" {
		c.mu.Unlock()
		p.o.Recorder.PortForwardIgnored(IgnoredOverflow)
		c.s.forget(c)
		c.s.reply(c.s.errorMsg(c.id, TypeForward, text))
		c.end(stopReply, "peer overran the ack window")
		return
	}
	c.pending = append(c.pending, b)
	c.pendingN = n
	c.mu.Unlock()
	notify(c.wake)
}

// setPendingLocked sets pendingN to n and gives back to the shared pool
// what the connection no longer draws from it. c.mu is held.
func (c *conn) setPendingLocked(n int) {
	c.pendingN = n
	if keep := max(0, n-pendingFloor); keep < c.pooled {
		c.s.p.pending.Add(-int64(c.pooled - keep))
		c.pooled = keep
	}
}

func (c *conn) ack() {
	select {
	case c.credits <- struct{}{}:
	default:
		// Nothing outstanding: upstream crashes here; ignore and count.
		c.s.p.o.Recorder.PortForwardIgnored(IgnoredStrayAck)
	}
}

func (c *conn) peerStop() {
	c.stopping.Store(true)
	c.mu.Lock()
	if nc := c.nc; nc != nil {
		// Ends a blocked read now; the reader sees stopping and leaves.
		_ = nc.SetReadDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
	notify(c.wake)
}

// abort ends the connection at once, without messages (session end).
func (c *conn) abort() {
	c.cancel()
	c.mu.Lock()
	nc := c.nc
	c.dead = true
	c.mu.Unlock()
	if nc != nil {
		_ = nc.Close()
	}
	c.end(stopNone, "session closed")
}

// How end tells the peer: not at all, by a Send that may wait (the
// connection's goroutines), or by a reply that never waits (the read loop).
const (
	stopNone = iota
	stopSend
	stopReply
)

// end frees the connection once: the destination socket, its slot and
// a `stop` to the peer as mode says.
func (c *conn) end(mode int, why string) {
	c.ended.Do(func() {
		c.s.forget(c)
		c.cancel()
		c.mu.Lock()
		nc := c.nc
		c.dead = true
		c.pending = nil
		c.setPendingLocked(0)
		opened := c.opened
		c.mu.Unlock()
		if nc != nil {
			_ = nc.Close()
		}
		p := c.s.p
		p.total.Add(-1)
		p.o.FDs.Release(1)
		if opened {
			p.o.Recorder.PortForwardClosed(c.network)
		}
		if p.logClosed.Allow(time.Now()) {
			c.log().Debug("port-forward: closed", "reason", why, "suppressed", p.logClosed.TakeSuppressed())
		}
		switch mode {
		case stopSend:
			// The connection's context is gone; the session's bounds it.
			if err := c.s.out.Send(c.s.ctx, c.s.msg(TypeStop, c.id, nil)); err != nil {
				c.log().Debug("port-forward: stop not sent", "error", err)
			}
		case stopReply:
			c.s.reply(c.s.msg(TypeStop, c.id, nil))
		}
	})
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run dials, answers `new`, starts the reader and writes the peer's
// data to the destination.
func (c *conn) run() {
	nc, err := c.dial()
	if err != nil {
		if c.ctx.Err() != nil {
			c.end(stopNone, "session closed while dialing")
			return
		}
		if c.stopping.Load() {
			c.end(stopSend, "stopped while dialing")
			return
		}
		c.logFailed("port-forward: dial failed", err)
		c.s.forget(c)
		_ = c.s.out.Send(c.s.ctx, c.s.errorMsg(c.id, TypeNew, err.Error()))
		c.end(stopNone, "dial failed")
		return
	}
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		_ = nc.Close()
		return
	}
	c.nc, c.opened = nc, true
	c.mu.Unlock()
	c.s.p.o.Recorder.PortForwardOpened(c.network)
	if err := c.s.out.Send(c.ctx, c.s.msg(TypeNew, c.id, nil)); err != nil {
		c.end(stopNone, "link gone")
		return
	}
	if !c.s.p.g.Go(func() { c.read(nc) }) {
		c.end(stopNone, "protocol closed")
		return
	}
	c.write(nc)
	// write returns once the connection is over; if it left because
	// the session or the link ended, nothing has freed the slot yet.
	c.end(stopNone, "session closed")
}

// dial connects to the destination as the configured account.
func (c *conn) dial() (nc net.Conn, err error) {
	p := c.s.p
	ctx, cancel := context.WithTimeout(c.ctx, p.o.DialTimeout)
	defer cancel()
	if e := p.o.Identity.Do(func() error { nc, err = c.dialAddrs(ctx); return nil }); e != nil {
		return nil, e
	}
	return nc, err
}

// dialAddrs resolves the host and dials its addresses one after the
// other, each as a literal: net.Dialer given a name races the address
// families in goroutines of its own, whose sockets would be created on
// other threads than the one that holds the account's identity. The
// allow list is checked against the addresses actually dialed, so that
// a name cannot lead somewhere the list does not allow.
func (c *conn) dialAddrs(ctx context.Context) (net.Conn, error) {
	p := c.s.p
	port := strconv.Itoa(int(c.port))
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(c.host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = p.o.Resolver.LookupNetIP(ctx, "ip", c.host)
		if err != nil {
			// As net.Dial words it: "dial tcp: lookup HOST: ...".
			return nil, &net.OpError{Op: "dial", Net: c.network, Err: err}
		}
	}
	if p.acl != nil && !p.acl.allowsName(c.network, c.host, c.port) {
		addrs = slices.DeleteFunc(addrs, func(ip netip.Addr) bool { return !p.acl.allowsAddr(c.network, ip, c.port) })
	}
	if len(addrs) == 0 && p.acl == nil {
		return nil, &net.OpError{Op: "dial", Net: c.network, Err: &net.DNSError{Err: "no addresses", Name: c.host}}
	}
	if len(addrs) == 0 {
		p.o.Recorder.PortForwardDenied(DenyAllowList)
		return nil, fmt.Errorf("access denied: %s/%s is not in PortForward.Allow", c.network, net.JoinHostPort(c.host, port))
	}
	var d net.Dialer
	var firstErr error
	for i, ip := range addrs {
		nc, err := dialShare(ctx, &d, c.network, net.JoinHostPort(ip.String(), port), len(addrs)-i)
		if err == nil {
			return nc, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// dialShare dials one of left addresses with its share of the time ctx
// has left (at least 2 s, as net.Dialer does), so that an unreachable
// first address does not take the whole timeout from the others.
func dialShare(ctx context.Context, d *net.Dialer, network, addr string, left int) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok && left > 1 {
		remain := time.Until(dl)
		if share := max(remain/time.Duration(left), 2*time.Second); share < remain {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, share)
			defer cancel()
		}
	}
	return d.DialContext(ctx, network, addr)
}

// write drains the peer's data into the destination, acking each
// forward after its write as upstream does.
func (c *conn) write(nc net.Conn) {
	rec := c.s.p.o.Recorder
	for {
		c.mu.Lock()
		for len(c.pending) == 0 {
			if c.stopping.Load() {
				c.mu.Unlock()
				c.end(stopSend, "stopped by the peer")
				return
			}
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-c.ctx.Done():
				return
			}
			c.mu.Lock()
		}
		b := c.pending[0]
		c.pending[0] = nil
		c.pending = c.pending[1:]
		c.mu.Unlock()
		stopping := c.stopping.Load()
		if stopping {
			_ = nc.SetWriteDeadline(time.Now().Add(flushTimeout))
		}
		_, err := nc.Write(b)
		c.mu.Lock()
		if !c.dead {
			c.setPendingLocked(c.pendingN - len(b))
		}
		c.mu.Unlock()
		rec.PortForwardBytes("in", len(b))
		if stopping {
			if err != nil {
				c.end(stopSend, "stopped by the peer; flush failed")
				return
			}
			continue
		}
		if e := c.s.out.Send(c.ctx, c.s.msg(TypeAck, c.id, nil)); e != nil {
			return
		}
		if err != nil {
			c.logFailed("port-forward: write failed", err)
			_ = c.s.out.Send(c.ctx, c.s.errorMsg(c.id, TypeForward, err.Error()))
			if c.network == ProtoTCP {
				c.end(stopSend, "write failed")
				return
			}
		}
	}
}

// read sends what the destination says, at most Window forwards ahead
// of the peer's acks; IdleTimeout without data ends the connection.
func (c *conn) read(nc net.Conn) {
	p := c.s.p
	size := p.o.ReadSize
	if c.network == ProtoUDP {
		size = maxUDP
	}
	buf := make([]byte, size)
	last := time.Now()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-c.credits:
		default:
			wait := time.Until(last.Add(p.o.IdleTimeout))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-c.credits:
				if !timer.Stop() {
					<-timer.C
				}
			case <-timer.C:
				timer = nil
				c.end(stopSend, "idle timeout (peer not acknowledging)")
				return
			case <-c.ctx.Done():
				return
			}
		}
		_ = nc.SetReadDeadline(last.Add(p.o.IdleTimeout))
		if c.stopping.Load() {
			return
		}
		n, err := nc.Read(buf)
		if n > 0 {
			last = time.Now()
			p.o.Recorder.PortForwardBytes("out", n)
			// Marshal copies buf into the frame.
			if e := c.s.out.Send(c.ctx, c.s.msg(TypeForward, c.id, buf[:n])); e != nil {
				c.end(stopNone, "link gone")
				return
			}
		} else {
			notify(c.credits) // the credit was not used
		}
		if err != nil {
			switch {
			case c.stopping.Load() || c.ctx.Err() != nil:
			case errors.Is(err, os.ErrDeadlineExceeded):
				c.end(stopSend, "idle timeout")
			case errors.Is(err, io.EOF):
				c.end(stopSend, "destination closed")
			default:
				c.logFailed("port-forward: read failed", err)
				c.end(stopSend, "read failed")
			}
			return
		}
	}
}

type nopRecorder struct{}

func (nopRecorder) PortForwardOpened(string)     {}
func (nopRecorder) PortForwardClosed(string)     {}
func (nopRecorder) PortForwardBytes(string, int) {}
func (nopRecorder) PortForwardDenied(string)     {}
func (nopRecorder) PortForwardIgnored(string)    {}
