package session

import (
	"fmt"
	"sync"
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
	sid     string // r.mu: a reattach re-keys the session to the new peer's sid
	userID  string
	created time.Time     // wall clock, for reports
	born    time.Duration // router clock (monotonic)
	q       *mux.Queue

	lastInput atomic.Int64 // router clock (monotonic), nanoseconds
	// gone is when the session was detached plus one (router clock,
	// nanoseconds), 0 while it has a peer; written under r.mu.
	gone atomic.Int64
	// goneUp is the link-up time when it was detached plus one: the
	// detached timeout counts only time in which its user could have
	// come back.
	goneUp atomic.Int64
	// spent is detached time already used up in a previous run of the
	// daemon (a restored session), nanoseconds.
	spent atomic.Int64
	// probe is the health probe waiting for the peer's answer, if any:
	// the peer's next message answers it.
	probe atomic.Pointer[probeWait]

	// Detached state, under r.mu.
	detached  bool
	discard   bool   // its output goes only to the replay buffer
	why       string // proto.Detach*
	linkProbe time.Duration
	probed    bool // a probe went out since the link came back
}

// probeWait is one health probe of a session: answered is closed by the
// peer's next message.
type probeWait struct{ answered chan struct{} }

func newProbeWait() *probeWait { return &probeWait{answered: make(chan struct{})} }

// The lease (proto.Lease) an admitted session holds.
func (l *leased) Queue() *mux.Queue              { return l.q }
func (l *leased) UpTime() time.Duration          { return l.r.mux.UpTime() }
func (l *leased) UpState() (time.Duration, bool) { return l.r.mux.UpState() }
func (l *leased) Wake()                          { l.r.wake() }
func (l *leased) Active()                        { l.lastInput.Store(int64(l.r.mono())) }
func (l *leased) Release()                       { l.r.remove(l) }
func (l *leased) Done()                          { l.r.wg.Done() }
func (l *leased) ShuttingDown() <-chan struct{}  { return l.r.done }

// Lost detaches the session for a later reattach when detached sessions
// are kept (proto.Lease).
func (l *leased) Lost(reason string) bool {
	if l.r.opts.DetachedTimeout <= 0 {
		return false
	}
	l.r.detach(l, reason, true)
	return true
}

func (l *leased) stop(reason, notice string) { l.s.Stop(reason, notice, l.r.opts.StopGrace) }

// id is the session's current sid.
func (l *leased) id() string {
	l.r.mu.Lock()
	defer l.r.mu.Unlock()
	return l.sid
}

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

// pendingAdmit holds the messages for a sid whose "new" waits for a probe
// of the user's sessions, so that a resize sent right behind the "new"
// is not lost.
type pendingAdmit struct {
	mu    sync.Mutex
	msgs  []*wire.ProtoMsg
	bytes int
	done  bool
}

// pendingLimit and pendingBytes bound the messages held for a pending sid;
// a client sends a resize or two before the reply, not a stream.
// pendingMax bounds the admissions waiting for a probe at once: each holds
// a goroutine for up to ProbeGrace, and a server sending a flood of "new"
// for a user whose terminal stays silent must not buy goroutines and
// held frames with it. A "new" beyond it is decided at once, as without
// reattach (refused, or evicting with EvictOldest).
const (
	pendingLimit = 64
	pendingBytes = 64 << 10
	pendingMax   = 16
)

// handleAdmitted hands a terminal message to its session, or to the
// terminal when its sid has none. A message from the peer answers a
// pending probe, and gives a detached session its peer back (a server
// that kept the user's connection across a link drop); a stop is the
// server speaking, not the peer, and proves nothing.
func (r *Router) handleAdmitted(p proto.Admitted, m *wire.ProtoMsg) {
	sid := m.Header.SessionID
	r.mu.Lock()
	if pa := r.pending[sid]; pa != nil {
		r.mu.Unlock()
		pa.mu.Lock()
		if !pa.done {
			if len(pa.msgs) < pendingLimit && pa.bytes+len(m.Body) <= pendingBytes {
				pa.msgs = append(pa.msgs, m)
				pa.bytes += len(m.Body)
			}
			pa.mu.Unlock()
			return
		}
		pa.mu.Unlock()
		r.mu.Lock()
	}
	l := r.shells[sid]
	resumed := false
	if l != nil && m.Header.MsgType != wire.ShellStop {
		if w := l.probe.Swap(nil); w != nil {
			close(w.answered)
		}
		if l.detached {
			r.attachLocked(l)
			l.s.Attach(sid, nil)
			resumed = true
		}
	}
	r.mu.Unlock()
	if l == nil {
		p.Handle(r, m)
		return
	}
	if resumed {
		r.log.Info("session attached again: its peer answered", "event", "session_attach", "session_id", logging.Clip(sid),
			"user_id", logging.Clip(l.userID))
		r.opts.Recorder.SessionReattached("resumed")
	}
	l.s.Handle(m)
}

// attachLocked clears l's detached state; r.mu is held.
func (r *Router) attachLocked(l *leased) {
	l.detached, l.discard, l.why, l.probed = false, false, "", false
	l.gone.Store(0)
	l.goneUp.Store(0)
	l.spent.Store(0)
	r.opts.Recorder.DetachedSessions(r.detachedLocked())
}

func (r *Router) detachedLocked() int {
	n := 0
	for _, l := range r.shells {
		if l.detached {
			n++
		}
	}
	return n
}

// detach deems l's peer gone, for why (proto.Detach*). With discard its
// output goes only to its replay buffer. Without kept detached sessions,
// a session found gone (discard) ends instead, as it did before reattach
// existed.
func (r *Router) detach(l *leased, why string, discard bool) {
	if discard && r.opts.DetachedTimeout <= 0 {
		reason := proto.ReasonHealthTimeout
		if why == proto.DetachNoAnswer {
			reason = proto.ReasonEvicted
		}
		r.log.Info("session's peer is gone; ending it (Sessions.DetachedTimeout is 0)", "event", "session_detach",
			"session_id", logging.Clip(l.id()), "user_id", logging.Clip(l.userID), "reason", why)
		l.stop(reason, "")
		return
	}
	r.mu.Lock()
	if r.shells[l.sid] != l {
		r.mu.Unlock()
		return
	}
	first := !l.detached
	if first {
		l.detached, l.why, l.probed = true, why, false
		l.gone.Store(int64(r.mono()) + 1)
		l.goneUp.Store(int64(r.mux.UpTime()) + 1)
		r.opts.Recorder.DetachedSessions(r.detachedLocked())
	}
	more := discard && !l.discard
	l.discard = l.discard || discard
	if first || more {
		l.s.Detach(l.discard)
	}
	sid := l.sid
	r.mu.Unlock()
	if first {
		r.log.Info("session detached: its peer is gone", "event", "session_detach", "session_id", logging.Clip(sid),
			"user_id", logging.Clip(l.userID), "reason", why, "keep_for", r.opts.DetachedTimeout.String())
		r.opts.Recorder.SessionDetached(why)
	}
	r.wake() // its detached timeout runs
}

// unknownShellMessage is upstream's answer to a shell message when the
// terminal is disabled.
func (r *Router) unknownShellMessage(m *wire.ProtoMsg) {
	r.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: m.Header.MsgType, SessionID: m.Header.SessionID,
		Properties: map[string]interface{}{wire.PropStatus: wire.StatusError}},
		Body: []byte(fmt.Sprintf("unknown message protocol and type: %d/%s", m.Header.Proto, m.Header.MsgType))})
}

// Admit gives a new session its place in the table, within the limits,
// or hands the user's detached session over (proto.Table). When the
// limits would refuse or evict, the user's sessions are probed first, off
// the read loop.
func (r *Router) Admit(sid, user string, m *wire.ProtoMsg, open func(proto.Lease) proto.AdmittedSession,
	done func(proto.AdmittedSession, bool, error)) {
	r.mu.Lock()
	if err := r.admissibleLocked(sid); err != nil {
		r.mu.Unlock()
		done(nil, false, err)
		return
	}
	a := r.decideLocked(user)
	var probe []*leased
	if a.refuse != "" || a.evictsLive {
		for _, l := range r.shells {
			if l.userID == user && !l.detached {
				probe = append(probe, l)
			}
		}
	}
	if len(probe) > 0 && len(r.pending) >= pendingMax {
		r.log.Debug("too many admissions waiting for a probe; deciding at once", "session_id", logging.Clip(sid),
			"user_id", logging.Clip(user))
		probe = nil
	}
	if len(probe) == 0 {
		l, reattached, err := r.admitLocked(sid, user, m, a, open) // unlocks
		r.admitted(l, reattached, err, done)
		return
	}
	pa := &pendingAdmit{}
	r.pending[sid] = pa
	r.wg.Add(1)
	r.mu.Unlock()
	go r.probeThenAdmit(sid, user, m, probe, pa, open, done)
}

func (r *Router) admissibleLocked(sid string) error {
	if r.closed {
		return proto.ErrClosed
	}
	if _, ok := r.shells[sid]; ok || r.pending[sid] != nil {
		return proto.ErrExists
	}
	return nil
}

func (r *Router) decideLocked(user string) admission {
	return admit(r.slotsLocked(), user, r.opts.MaxPerUser, r.opts.MaxTotal, r.opts.EvictOldest, r.opts.DetachedTimeout > 0)
}

// probeThenAdmit pings the user's sessions, deems those that do not
// answer within the grace detached, then decides on the new session and
// delivers what arrived for it meanwhile.
func (r *Router) probeThenAdmit(sid, user string, m *wire.ProtoMsg, probe []*leased, pa *pendingAdmit,
	open func(proto.Lease) proto.AdmittedSession, done func(proto.AdmittedSession, bool, error)) {
	defer r.wg.Done()
	r.log.Debug("probing the user's sessions before deciding on a new one", "session_id", logging.Clip(sid),
		"user_id", logging.Clip(user), "sessions", len(probe))
	waits := make([]*probeWait, len(probe))
	for i, l := range probe {
		w := newProbeWait()
		if l.probe.CompareAndSwap(nil, w) {
			l.s.Probe()
		} else if cur := l.probe.Load(); cur != nil {
			w = cur // a probe is out already: its answer will do
		}
		waits[i] = w
	}
	t := time.NewTimer(r.opts.ProbeGrace)
	expired := false
	for _, w := range waits {
		if expired {
			break
		}
		select {
		case <-w.answered:
		case <-t.C:
			expired = true
		case <-r.done:
			expired = true
		}
	}
	t.Stop()
	for i, l := range probe {
		select {
		case <-waits[i].answered:
		default:
			l.probe.CompareAndSwap(waits[i], nil)
			r.detach(l, proto.DetachNoAnswer, true)
		}
	}

	pa.mu.Lock()
	r.mu.Lock()
	delete(r.pending, sid)
	var (
		l          *leased
		reattached bool
		err        = r.admissibleLocked(sid)
	)
	if err != nil {
		r.mu.Unlock()
	} else {
		l, reattached, err = r.admitLocked(sid, user, m, r.decideLocked(user), open)
	}
	r.admitted(l, reattached, err, done)
	// In order, before anything the read loop brings next: it waits
	// for pa.mu.
	for _, hm := range pa.msgs {
		r.HandleMessage(hm)
	}
	pa.msgs, pa.done = nil, true
	pa.mu.Unlock()
}

// admitted tells the protocol the outcome and wakes the janitor.
func (r *Router) admitted(l *leased, reattached bool, err error, done func(proto.AdmittedSession, bool, error)) {
	if err != nil {
		done(nil, false, err)
		return
	}
	done(l.s, reattached, nil)
	r.wake() // its expiry and first ping are due
}

// admitLocked carries out admission a for sid; r.mu is held and released.
func (r *Router) admitLocked(sid, user string, m *wire.ProtoMsg, a admission, open func(proto.Lease) proto.AdmittedSession) (*leased, bool, error) {
	switch a.refuse {
	case "per_user":
		r.mu.Unlock()
		r.reject(sid, user, "per_user")
		return nil, false, proto.ErrUserLimit
	case "total":
		r.mu.Unlock()
		r.reject(sid, user, "total")
		return nil, false, proto.ErrTotalLimit
	}
	if back := r.shells[a.reattach]; back != nil {
		old := back.sid
		delete(r.shells, old)
		back.sid = sid
		r.shells[sid] = back
		gone := r.mono() - time.Duration(back.gone.Load()-1)
		why := back.why
		back.lastInput.Store(int64(r.mono()))
		if w := back.probe.Swap(nil); w != nil {
			close(w.answered)
		}
		r.attachLocked(back)
		back.s.Attach(sid, m)
		r.mu.Unlock()
		r.log.Info("session reattached: handed to the user's new terminal", "event", "session_reattach",
			"session_id", logging.Clip(sid), "old_session_id", logging.Clip(old), "user_id", logging.Clip(user),
			"detached_for", gone.Round(time.Millisecond).String(), "detached_reason", why)
		r.opts.Recorder.SessionReattached("new_terminal")
		return back, true, nil
	}
	evict := r.shells[a.evict]
	if evict != nil {
		delete(r.shells, evict.sid) // its slot goes to the new session now
	}
	l := &leased{r: r, sid: sid, userID: user, created: r.now(), q: r.mux.NewQueue(r.opts.QueueLimit)}
	l.born = r.mono()
	l.lastInput.Store(int64(l.born))
	r.wg.Add(1) // before open: the session may end (Done) as soon as it exists
	l.s = open(l)
	r.shells[sid] = l
	if evict != nil && evict.detached {
		r.opts.Recorder.DetachedSessions(r.detachedLocked())
	}
	r.mu.Unlock()

	if evict != nil {
		r.log.Info("evicting a session of the user for a new one", "event", "session_evict",
			"session_id", evict.sid, "user_id", user, "new_session_id", sid)
		evict.stop(proto.ReasonEvicted, a.evictNotice)
	}
	return l, false, nil
}

// slotsLocked lists the live sessions for admission; r.mu is held.
func (r *Router) slotsLocked() []slot {
	out := make([]slot, 0, len(r.shells))
	for _, s := range r.shells {
		out = append(out, slot{sid: s.sid, user: s.userID, lastInput: time.Duration(s.lastInput.Load()),
			detached: s.detached, detachedAt: time.Duration(s.gone.Load() - 1)})
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
		if l.detached {
			r.opts.Recorder.DetachedSessions(r.detachedLocked())
		}
	}
	r.mu.Unlock()
}

// detachAll marks every session detached on a link drop: the real server
// forgets its user connections with the link, a lenient one keeps them,
// so output is still sent until a probe after the reconnect says which.
func (r *Router) detachAll() {
	r.mu.Lock()
	all := make([]*leased, 0, len(r.shells))
	for _, l := range r.shells {
		all = append(all, l)
	}
	r.mu.Unlock()
	for _, l := range all {
		r.detach(l, proto.DetachLinkDown, false)
		r.mu.Lock()
		l.probed = false // the probe goes out on the next connection
		r.mu.Unlock()
	}
}

// probeSuspects runs on every sweep while the link is up: a session
// detached by a link drop (its output still sent) is pinged once, and
// deemed gone for good when no answer came within the grace. It returns
// how long until the next such decision is due.
func (r *Router) probeSuspects(now time.Duration) time.Duration {
	if _, up := r.mux.UpState(); !up {
		return 0
	}
	grace := r.opts.ProbeGrace
	var next time.Duration
	var ping, gone []*leased
	r.mu.Lock()
	for _, l := range r.shells {
		if !l.detached || l.discard {
			continue
		}
		switch {
		case !l.probed:
			l.probed, l.linkProbe = true, now
			w := newProbeWait()
			if l.probe.CompareAndSwap(nil, w) {
				ping = append(ping, l)
			}
			next = sooner(next, grace)
		case now-l.linkProbe >= grace:
			gone = append(gone, l)
		default:
			next = sooner(next, l.linkProbe+grace-now)
		}
	}
	r.mu.Unlock()
	for _, l := range ping {
		l.s.Probe()
	}
	for _, l := range gone {
		l.probe.Store(nil)
		r.detach(l, proto.DetachNoAnswer, true)
	}
	return next
}

// supervise runs on every janitor sweep: expiry, then the session's own
// health check. It returns how long until it is next due (0: nothing is
// while nothing changes) and whether a ping was queued. Expiry runs on the
// router's monotonic clock, the health check on link-up time.
func (l *leased) supervise(now, early time.Duration) (time.Duration, bool) {
	o := &l.r.opts
	var next time.Duration
	if g := l.goneUp.Load(); g > 0 && o.DetachedTimeout > 0 {
		up, linkUp := l.r.mux.UpState()
		left := time.Duration(g-1) + o.DetachedTimeout - time.Duration(l.spent.Load()) - up
		switch {
		case left <= 0:
			l.r.log.Info("detached session not reattached in time", "event", "session_detach_expired",
				"session_id", logging.Clip(l.id()), "user_id", logging.Clip(l.userID), "detached_timeout", o.DetachedTimeout.String())
			l.stop(proto.ReasonDetachedExpired, "")
			return 0, false
		case linkUp:
			// Link-up time stands still while the link is down; the
			// mux wakes the janitor when it comes back.
			next = sooner(next, left)
		}
	}
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
