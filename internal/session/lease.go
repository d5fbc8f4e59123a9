package session

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// leased is an admitted session's (a shell's) place in the table: what
// limits, expiry and reports need to know of it. The session itself
// belongs to its protocol.
type leased struct {
	r       *Router
	s       proto.AdmittedSession
	sid     string
	userID  string
	created time.Time     // wall clock, for reports
	born    time.Duration // router clock (monotonic)
	q       *mux.Queue

	lastInput atomic.Int64  // router clock (monotonic), nanoseconds
	peerEpoch atomic.Uint64 // router epoch of the peer's latest message
}

// The lease (proto.Lease) an admitted session holds.
func (l *leased) Queue() *mux.Queue              { return l.q }
func (l *leased) UpTime() time.Duration          { return l.r.mux.UpTime() }
func (l *leased) UpState() (time.Duration, bool) { return l.r.mux.UpState() }
func (l *leased) Wake()                          { l.r.wake() }
func (l *leased) Active()                        { l.lastInput.Store(int64(l.r.mono())) }
func (l *leased) Release()                       { l.r.remove(l) }
func (l *leased) Done()                          { l.r.wg.Done() }
func (l *leased) ShuttingDown() <-chan struct{}  { return l.r.done }

func (l *leased) stop(reason, notice string) { l.s.Stop(reason, notice, l.r.opts.StopGrace) }

// Reply queues a frame on the router's reply queue (proto.Table).
func (r *Router) Reply(m *wire.ProtoMsg) { r.send(m) }

// StopUser stops every session of user (proto.Table).
func (r *Router) StopUser(user, reason string) {
	r.mu.Lock()
	var mine []*leased
	for _, l := range r.shells {
		if l.userID == user {
			mine = append(mine, l)
		}
	}
	r.mu.Unlock()
	for _, l := range mine {
		l.stop(reason, "")
	}
}

// handleAdmitted hands a terminal message to its session, or to the
// terminal when its sid has none. The message proves the session's peer
// alive in this link epoch.
func (r *Router) handleAdmitted(p proto.Admitted, m *wire.ProtoMsg) {
	r.mu.Lock()
	l := r.shells[m.Header.SessionID]
	if l != nil {
		l.peerEpoch.Store(r.epoch)
	}
	r.mu.Unlock()
	if l == nil {
		p.Handle(r, m)
		return
	}
	l.s.Handle(m)
}

// unknownShellMessage is upstream's answer to a shell message when the
// terminal is disabled.
func (r *Router) unknownShellMessage(m *wire.ProtoMsg) {
	r.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: m.Header.MsgType, SessionID: m.Header.SessionID,
		Properties: map[string]interface{}{wire.PropStatus: wire.StatusError}},
		Body: []byte(fmt.Sprintf("unknown message protocol and type: %d/%s", m.Header.Proto, m.Header.MsgType))})
}

// Admit gives a new session its place in the table, within the limits
// (proto.Table).
func (r *Router) Admit(sid, user string, open func(proto.Lease) proto.AdmittedSession) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return proto.ErrClosed
	}
	if _, ok := r.shells[sid]; ok {
		r.mu.Unlock()
		return proto.ErrExists
	}
	a := admit(r.slotsLocked(), user, r.opts.MaxPerUser, r.opts.MaxTotal, r.opts.EvictOldest)
	switch a.refuse {
	case "per_user":
		r.mu.Unlock()
		r.reject(sid, user, "per_user")
		return proto.ErrUserLimit
	case "total":
		r.mu.Unlock()
		r.reject(sid, user, "total")
		return proto.ErrTotalLimit
	}
	evict := r.shells[a.evict]
	if evict != nil {
		delete(r.shells, evict.sid) // its slot goes to the new session now
	}
	l := &leased{r: r, sid: sid, userID: user, created: r.now(), q: r.mux.NewQueue(r.opts.QueueLimit)}
	l.born = r.mono()
	l.lastInput.Store(int64(l.born))
	l.peerEpoch.Store(r.epoch)
	r.wg.Add(1) // before open: the session may end (Done) as soon as it exists
	l.s = open(l)
	r.shells[sid] = l
	r.mu.Unlock()
	r.wake() // its expiry and first ping are due

	if evict != nil {
		r.log.Info("evicting a session of the user for a new one", "event", "session_evict",
			"session_id", evict.sid, "user_id", user, "new_session_id", sid)
		evict.stop(proto.ReasonEvicted, a.evictNotice)
	}
	return nil
}

// slotsLocked lists the live sessions for admission; r.mu is held.
func (r *Router) slotsLocked() []slot {
	out := make([]slot, 0, len(r.shells))
	for _, s := range r.shells {
		out = append(out, slot{sid: s.sid, user: s.userID, lastInput: time.Duration(s.lastInput.Load()),
			orphan: s.peerEpoch.Load() < r.epoch})
	}
	return out
}

func (r *Router) reject(sid, user, limit string) {
	if r.plog.reject.Allow(r.now()) {
		r.log.Warn("session refused: limit reached", "event", "limit_reject", "limit", limit,
			"session_id", logging.Clip(sid), "user_id", logging.Clip(user), "suppressed", r.plog.reject.TakeSuppressed())
	}
	r.opts.Recorder.LimitRejected(limit)
}

// remove takes l out of the table if it is still there.
func (r *Router) remove(l *leased) {
	r.mu.Lock()
	if r.shells[l.sid] == l {
		delete(r.shells, l.sid)
	}
	r.mu.Unlock()
}

// supervise runs on every janitor sweep: expiry, then the session's own
// health check. It returns how long until it is next due (0: nothing is
// while nothing changes) and whether a ping was queued. Expiry runs on the
// router's monotonic clock, the health check on link-up time.
func (l *leased) supervise(now, early time.Duration) (time.Duration, bool) {
	o := &l.r.opts
	var next time.Duration
	if o.AbsoluteTimeout > 0 {
		left := l.born + o.AbsoluteTimeout - now
		if left <= 0 {
			l.stop(proto.ReasonAbsoluteExpired, fmt.Sprintf("session expired: open for %s", o.AbsoluteTimeout))
			return 0, false
		}
		next = sooner(next, left)
	}
	if o.IdleTimeout > 0 {
		left := time.Duration(l.lastInput.Load()) + o.IdleTimeout - now
		if left <= 0 {
			l.stop(proto.ReasonIdleExpired, fmt.Sprintf("session expired: idle for %s", o.IdleTimeout))
			return 0, false
		}
		next = sooner(next, left)
	}
	d, pinged := l.s.Supervise(early)
	return sooner(next, d), pinged
}
