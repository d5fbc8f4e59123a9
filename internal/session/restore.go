package session

import (
	"context"
	"time"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/proto"
)

// Restore puts a session from a previous run of the daemon in the table,
// detached, for its user's next terminal (proto.Restorer). Its absolute
// timeout counts from its creation, its idle and detached timeouts go on
// from what the previous run left of them.
func (r *Router) Restore(rs proto.Restored, open func(proto.Lease) proto.AdmittedSession) error {
	r.mu.Lock()
	if err := r.admissibleLocked(rs.SessionID); err != nil {
		r.mu.Unlock()
		return err
	}
	now := r.mono()
	l := &leased{r: r, sid: rs.SessionID, userID: rs.UserID, created: rs.Created, q: r.mux.NewQueue(r.opts.QueueLimit)}
	l.born = now - max(0, r.now().Sub(rs.Created))
	idle := time.Duration(0)
	if it := r.opts.IdleTimeout; it > 0 && rs.IdleLeft > 0 && rs.IdleLeft < it {
		idle = it - rs.IdleLeft
	}
	l.lastInput.Store(int64(now - idle))
	l.detached, l.discard, l.why = true, true, proto.DetachRestored
	l.gone.Store(int64(now) + 1)
	l.goneUp.Store(int64(r.mux.UpTime()) + 1)
	if dt := r.opts.DetachedTimeout; rs.DetachedLeft > 0 && rs.DetachedLeft < dt {
		l.spent.Store(int64(dt - rs.DetachedLeft))
	}
	r.wg.Add(1) // before open, as for Admit
	l.s = open(l)
	l.s.Detach(true)
	r.shells[rs.SessionID] = l
	r.opts.Recorder.DetachedSessions(r.detachedLocked())
	r.mu.Unlock()
	r.log.Info("session restored from the previous run; detached until its user opens a terminal", "event", "session_restore",
		"session_id", logging.Clip(rs.SessionID), "user_id", logging.Clip(rs.UserID),
		"keep_for", (r.opts.DetachedTimeout - time.Duration(l.spent.Load())).String())
	r.wake()
	return nil
}

// HandOver ends the router for a restart or upgrade that keeps the shells:
// like Shutdown it refuses new sessions and closes the other protocols'
// sessions, but each shell that can go on (proto.HandOverer) is handed
// over instead of stopped; the rest are stopped with grace. It returns the
// handed over sessions with what was left of their clocks, once every
// session goroutine has ended (or ctx).
func (r *Router) HandOver(ctx context.Context, grace time.Duration) []proto.HandedOver {
	r.mu.Lock()
	r.closed = true
	r.doneOnce.Do(func() { close(r.done) })
	ended := r.ctrl
	r.ctrl = make(map[string]*ctrlSession)
	anon := r.anon
	all := make([]*leased, 0, len(r.shells))
	for _, l := range r.shells {
		all = append(all, l)
	}
	r.mu.Unlock()
	for _, c := range ended {
		r.closeProtos(c)
	}
	r.closeProtos(anon)
	var out []proto.HandedOver
	for _, l := range all {
		ho, ok := l.s.(proto.HandOverer)
		if !ok {
			l.s.Stop(proto.ReasonShutdown, "device agent shutting down", grace)
			continue
		}
		h := r.clocks(l)
		if h.State = ho.HandOver(); h.State != nil {
			out = append(out, h)
			continue
		}
		// Not kept, or ending by itself meanwhile.
		l.s.Stop(proto.ReasonShutdown, "device agent shutting down", grace)
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("hand-over: sessions still ending", "error", ctx.Err())
	}
	return out
}

// clocks reads what is left of l's expiry clocks.
func (r *Router) clocks(l *leased) proto.HandedOver {
	o := &r.opts
	now := r.mono()
	r.mu.Lock()
	h := proto.HandedOver{SessionID: l.sid, UserID: l.userID, Created: l.created, Detached: l.detached}
	r.mu.Unlock()
	if o.IdleTimeout > 0 {
		h.IdleLeft = max(time.Nanosecond, time.Duration(l.lastInput.Load())+o.IdleTimeout-now)
	}
	if o.AbsoluteTimeout > 0 {
		h.AbsoluteLeft = max(time.Nanosecond, l.born+o.AbsoluteTimeout-now)
	}
	if g := l.goneUp.Load(); g > 0 && o.DetachedTimeout > 0 {
		up := r.mux.UpTime()
		h.DetachedLeft = max(time.Nanosecond, time.Duration(g-1)+o.DetachedTimeout-time.Duration(l.spent.Load())-up)
	}
	return h
}
