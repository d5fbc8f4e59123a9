package session

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// Router (control) sessions, docs/protocol.md §3: a sid seen on a non-shell
// message gets one; it is supervised for idleness (a control ping after
// 4/5 of the minute, a "session timeout" error 1/5 later).
const (
	ctrlPingAfter    = 48 * time.Second
	ctrlTimeoutAfter = 12 * time.Second
	maxCtrlSessions  = 1024
)

type ctrlSession struct {
	sid    string
	lastIn time.Time
	pinged time.Time // zero unless a ping is outstanding

	// The protocols' state in this session, opened on their first
	// message; pmu orders Handle before Close so that no protocol sees a
	// message after it was closed.
	pmu    sync.Mutex
	protos map[uint16]proto.Session
	q      *mux.Queue // the session's outbound frames, made on first use
	ended  bool
}

// ctrlSender is a router session's proto.Sender.
type ctrlSender struct{ q *mux.Queue }

func (s ctrlSender) Send(ctx context.Context, m *wire.ProtoMsg) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	return s.q.Put(ctx, b)
}

// SendFrame implements proto.FrameSender.
func (s ctrlSender) SendFrame(ctx context.Context, b []byte, held int, release func()) error {
	return s.q.PutPooled(ctx, b, held, release)
}

// handle hands m to its protocol's session in c, opening it first. A
// protocol that panics ends the router session with "internal error",
// as upstream does, instead of taking the daemon down.
func (r *Router) handleProto(c *ctrlSession, p proto.Protocol, m *wire.ProtoMsg) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.ended {
		return
	}
	n := p.Number()
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("protocol handler panicked", "proto", wire.ProtoName(n), "session_id", c.sid, "panic", fmt.Sprint(v))
			if ps := c.protos[n]; ps != nil {
				delete(c.protos, n)
				// Off this goroutine: the session may have panicked
				// holding its own locks. Once the router is shut down
				// the protocol's Close has closed it.
				r.bg.Go(ps.Close)
			}
			if c.sid != "" {
				c.ended = true
				r.endCtrl(c.sid)
				r.sendControlError(c.sid, "internal error", true, nil)
			}
		}
	}()
	ps := c.protos[n]
	if ps == nil {
		if c.protos == nil {
			c.protos = make(map[uint16]proto.Session)
		}
		if c.q == nil {
			c.q = r.mux.NewQueue(r.opts.QueueLimit)
		}
		ps = p.Open(c.sid, ctrlSender{q: c.q})
		c.protos[n] = ps
	}
	ps.Handle(m)
}

// closeProtos closes every protocol session of c and its queue. Frames
// already queued (a last error, a stop) are still written.
func (r *Router) closeProtos(c *ctrlSession) {
	c.pmu.Lock()
	protos, q := c.protos, c.q
	c.protos, c.ended = nil, true
	c.pmu.Unlock()
	for _, ps := range protos {
		ps.Close()
	}
	if q != nil {
		q.Close()
	}
}

// touchCtrl records inbound traffic on a router session, creating it, and
// returns it (nil for the empty sid, which has no router session).
func (r *Router) touchCtrl(sid string) *ctrlSession {
	if sid == "" || len(sid) > maxIDLen {
		// The length bound also bounds the table's bytes, not only its
		// entries: at most maxCtrlSessions × maxIDLen of ids.
		return nil
	}
	now := r.now()
	r.mu.Lock()
	if c, ok := r.ctrl[sid]; ok {
		c.lastIn, c.pinged = now, time.Time{}
		r.mu.Unlock()
		return c
	}
	var evicted *ctrlSession
	if len(r.ctrl) >= maxCtrlSessions {
		// Bounded: garbage sids must not grow memory. Forget the stalest.
		for _, c := range r.ctrl {
			if evicted == nil || c.lastIn.Before(evicted.lastIn) {
				evicted = c
			}
		}
		delete(r.ctrl, evicted.sid)
	}
	c := &ctrlSession{sid: sid, lastIn: now}
	r.ctrl[sid] = c
	r.mu.Unlock()
	r.wake() // its idle ping is due

	if evicted != nil {
		r.closeProtos(evicted)
	}
	return c
}

// endCtrl ends a router session and closes its protocols.
func (r *Router) endCtrl(sid string) {
	r.mu.Lock()
	c := r.ctrl[sid]
	delete(r.ctrl, sid)
	r.mu.Unlock()
	if c != nil {
		// Off this goroutine: a protocol's handler that panicked ends
		// its session from under c.pmu. Once the router is shut down,
		// Shutdown has closed every session it had, and the protocols
		// close whatever opened later.
		r.bg.Go(func() { r.closeProtos(c) })
	}
}

func (r *Router) handleControl(m *wire.ProtoMsg) {
	h := &m.Header
	sid := h.SessionID
	r.touchCtrl(sid)
	switch h.MsgType {
	case wire.TypeOpen:
		var open wire.OpenBody
		if err := wire.DecodeBody(m.Body, &open); err != nil {
			r.sendControlError(sid, "failed to decode handshake request: "+err.Error(), true, nil)
			r.endCtrl(sid)
			return
		}
		if !slices.Contains(open.Versions, wire.ProtocolVersion) {
			r.sendControlError(sid, "handshake rejected: require version 1", true, nil)
			r.endCtrl(sid)
			return
		}
		body, err := wire.EncodeBody(wire.AcceptBody{Version: wire.ProtocolVersion, Protocols: r.Protocols()})
		if err != nil {
			r.log.Error("encode accept", "error", err)
			return
		}
		r.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeAccept, SessionID: sid}, Body: body})
	case wire.TypeAccept:
		var acc wire.AcceptBody
		if err := wire.DecodeBody(m.Body, &acc); err != nil {
			r.sendControlError(sid, "malformed handshake response: "+err.Error(), true, nil)
			r.endCtrl(sid)
			return
		}
		if acc.Version != wire.ProtocolVersion {
			r.sendControlError(sid, fmt.Sprintf("unsupported protocol version %d: require version 1", acc.Version), true, nil)
			r.endCtrl(sid)
		}
	case wire.TypePing:
		r.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePong, SessionID: sid}})
	case wire.TypePong:
	case wire.TypeClose:
		r.endCtrl(sid)
	case wire.TypeError:
		var e wire.ErrorBody
		if err := wire.DecodeBody(m.Body, &e); err != nil {
			if r.plog.ctrlError.Allow(r.now()) {
				r.log.Warn("undecodable control error from server", "session_id", sid, "error", err,
					"suppressed", r.plog.ctrlError.TakeSuppressed())
			}
			return
		}
		if r.plog.ctrlError.Allow(r.now()) {
			r.log.Warn("control error from server", "session_id", sid, "error", logging.Clip(e.Error), "close", e.Close,
				"suppressed", r.plog.ctrlError.TakeSuppressed())
		}
		if e.Close {
			r.endCtrl(sid)
		}
	default:
		r.sendControlError(sid, fmt.Sprintf("session: control type message not understood: '%s'", h.MsgType), false, nil)
	}
}

// superviseCtrl pings idle router sessions and ends those that did not
// answer; it returns how long until it is next due (0: nothing is).
func (r *Router) superviseCtrl(now time.Time) time.Duration {
	var ping, timeout []string
	var ended []*ctrlSession
	var next time.Duration
	r.mu.Lock()
	for sid, c := range r.ctrl {
		switch {
		case !c.pinged.IsZero() && now.Sub(c.pinged) >= ctrlTimeoutAfter:
			timeout = append(timeout, sid)
			ended = append(ended, c)
			delete(r.ctrl, sid)
		case c.pinged.IsZero() && now.Sub(c.lastIn) >= ctrlPingAfter:
			c.pinged = now
			ping = append(ping, sid)
			next = sooner(next, ctrlTimeoutAfter)
		case c.pinged.IsZero():
			next = sooner(next, ctrlPingAfter-now.Sub(c.lastIn))
		default:
			next = sooner(next, ctrlTimeoutAfter-now.Sub(c.pinged))
		}
	}
	r.mu.Unlock()
	for _, sid := range ping {
		r.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePing, SessionID: sid}})
	}
	for _, c := range ended {
		r.closeProtos(c)
	}
	for _, sid := range timeout {
		r.sendControlError(sid, "session timeout", true, nil)
	}
	return next
}
