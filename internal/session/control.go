package session

import (
	"fmt"
	"slices"
	"time"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/wire"
)

// Router (control) sessions, PROTOCOL.md 2.5: a sid seen on a non-shell
// message gets one; it is supervised for idleness (a control ping after
// 4/5 of the minute, a "session timeout" error 1/5 later).
const (
	ctrlPingAfter    = 48 * time.Second
	ctrlTimeoutAfter = 12 * time.Second
	maxCtrlSessions  = 1024
)

type ctrlSession struct {
	lastIn time.Time
	pinged time.Time // zero unless a ping is outstanding
}

// touchCtrl records inbound traffic on a router session, creating it.
func (r *Router) touchCtrl(sid string) {
	if sid == "" || len(sid) > maxIDLen {
		// The length bound also bounds the table's bytes, not only its
		// entries: at most maxCtrlSessions × maxIDLen of ids.
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.ctrl[sid]; ok {
		c.lastIn, c.pinged = now, time.Time{}
		return
	}
	if len(r.ctrl) >= maxCtrlSessions {
		// Bounded: garbage sids must not grow memory. Forget the stalest.
		var oldest string
		var t time.Time
		for id, c := range r.ctrl {
			if oldest == "" || c.lastIn.Before(t) {
				oldest, t = id, c.lastIn
			}
		}
		delete(r.ctrl, oldest)
	}
	r.ctrl[sid] = &ctrlSession{lastIn: now}
}

func (r *Router) endCtrl(sid string) {
	r.mu.Lock()
	delete(r.ctrl, sid)
	r.mu.Unlock()
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
			if r.plog.ctrlError.allow(time.Now()) {
				r.log.Warn("undecodable control error from server", "session_id", sid, "error", err,
					"suppressed", r.plog.ctrlError.takeSuppressed())
			}
			return
		}
		if r.plog.ctrlError.allow(time.Now()) {
			r.log.Warn("control error from server", "session_id", sid, "error", logging.Clip(e.Error), "close", e.Close,
				"suppressed", r.plog.ctrlError.takeSuppressed())
		}
		if e.Close {
			r.endCtrl(sid)
		}
	default:
		r.sendControlError(sid, fmt.Sprintf("session: control type message not understood: '%s'", h.MsgType), false, nil)
	}
}

func (r *Router) superviseCtrl(now time.Time) {
	var ping, timeout []string
	r.mu.Lock()
	for sid, c := range r.ctrl {
		switch {
		case !c.pinged.IsZero() && now.Sub(c.pinged) >= ctrlTimeoutAfter:
			timeout = append(timeout, sid)
			delete(r.ctrl, sid)
		case c.pinged.IsZero() && now.Sub(c.lastIn) >= ctrlPingAfter:
			c.pinged = now
			ping = append(ping, sid)
		}
	}
	r.mu.Unlock()
	for _, sid := range ping {
		r.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePing, SessionID: sid}})
	}
	for _, sid := range timeout {
		r.sendControlError(sid, "session timeout", true, nil)
	}
}
