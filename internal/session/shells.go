package session

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/shell"
	"github.com/tether-agent/tether/internal/wire"
)

// inputLimit bounds terminal input waiting for a shell that does not read
// its terminal, in bytes.
const inputLimit = 256 << 10

type stopRequest struct {
	reason string
	notice string // sent to the peer as a status-2 stop; "" = none
	grace  time.Duration
}

// shellSession is one terminal: it owns its pty, process and queue.
type shellSession struct {
	r       *Router
	sid     string
	userID  string
	created time.Time     // wall clock, for reports
	born    time.Duration // router clock (monotonic)
	q       *mux.Queue
	in      *inputQueue

	lastInput atomic.Int64  // router clock (monotonic), nanoseconds
	peerEpoch atomic.Uint64 // router epoch of the peer's latest message

	// Health check, in link-up time (mux.UpTime): a ping is queued every
	// PingInterval; its deadline runs from when it actually left.
	hmu        sync.Mutex
	pingQueued bool          // a ping waits in the queue
	lastPingAt time.Duration // up-time when the latest ping was queued
	awaiting   bool          // a ping left and no pong came since
	pingLeft   time.Duration // up-time when the oldest unanswered ping left

	mu         sync.Mutex
	proc       *shell.Process
	cols, rows uint16

	reads  atomic.Int64 // pty reads, to tell an idle pump from a busy one
	inRead atomic.Bool

	stopOnce sync.Once
	stopCh   chan stopRequest // capacity 1: the first request wins
	ctx      context.Context  // ends when the session is stopping
	cancel   context.CancelFunc
}

func (r *Router) handleShell(m *wire.ProtoMsg) {
	h := &m.Header
	switch h.MsgType {
	case wire.ShellNew:
		r.newShell(h)
	case wire.ShellData:
		s := r.lookup(h.SessionID)
		if s == nil {
			r.replyShell(h.SessionID, wire.ShellData, wire.StatusError, msgNoSession)
			return
		}
		s.lastInput.Store(int64(r.mono()))
		if len(m.Body) == 0 {
			return
		}
		if !s.in.Write(m.Body) {
			// The shell has not read its terminal for a long time; say
			// so rather than stall every other session.
			r.replyShell(h.SessionID, wire.ShellData, wire.StatusError, "terminal input queue full: input dropped")
		}
	case wire.ShellResize:
		s := r.lookup(h.SessionID)
		if s == nil {
			r.log.Debug("resize for unknown session", "session_id", h.SessionID)
			return
		}
		if cols, rows, ok := termSize(h); ok {
			s.resize(cols, rows)
		}
	case wire.ShellStop:
		r.stopShell(h, m.Body)
	case wire.ShellPong:
		if s := r.lookup(h.SessionID); s != nil {
			s.hmu.Lock()
			s.awaiting = false
			s.hmu.Unlock()
		}
	default:
		r.unknownShellMessage(m)
	}
}

func (r *Router) unknownShellMessage(m *wire.ProtoMsg) {
	r.replyShell(m.Header.SessionID, m.Header.MsgType, wire.StatusError,
		fmt.Sprintf("unknown message protocol and type: %d/%s", m.Header.Proto, m.Header.MsgType))
}

func shellMsg(sid, typ string, status int, body string) *wire.ProtoMsg {
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: typ, SessionID: sid,
		Properties: map[string]interface{}{wire.PropStatus: status}}}
	if body != "" {
		m.Body = []byte(body)
	}
	return m
}

func (r *Router) replyShell(sid, typ string, status int, body string) {
	r.send(shellMsg(sid, typ, status, body))
}

// lookup finds a session; the message being handled proves its peer is
// alive in this link epoch.
func (r *Router) lookup(sid string) *shellSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shells[sid]
	if s != nil {
		s.peerEpoch.Store(r.epoch)
	}
	return s
}

// maxTermDim bounds a terminal dimension from the wire: the kernel takes
// 16 bits, and nothing real is wider than this.
const maxTermDim = 4096

// termSize reads the terminal size properties. Values that are missing,
// not positive or absurd (a 65536 that uint16 would make 0, a -1 that it
// would make 65535) are refused; sizes above maxTermDim are clamped.
func termSize(h *wire.Header) (cols, rows uint16, ok bool) {
	w, okw := h.IntProp(wire.PropTerminalWidth)
	ht, okh := h.IntProp(wire.PropTerminalHeight)
	if !okw || !okh || w <= 0 || ht <= 0 {
		return 0, 0, false
	}
	return uint16(min(w, maxTermDim)), uint16(min(ht, maxTermDim)), true
}

func (r *Router) newShell(h *wire.Header) {
	sid, user := h.SessionID, h.StringProp(wire.PropUserID)
	cols, rows := r.opts.DefaultCols, r.opts.DefaultRows
	if c, rr, ok := termSize(h); ok {
		cols, rows = c, rr
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.replyShell(sid, wire.ShellNew, wire.StatusError, "failed to start shell: device agent shutting down")
		return
	}
	if _, ok := r.shells[sid]; ok {
		r.mu.Unlock()
		r.replyShell(sid, wire.ShellNew, wire.StatusError, msgAlreadyRunning)
		return
	}
	a := admit(r.slotsLocked(), user, r.opts.MaxPerUser, r.opts.MaxTotal, r.opts.EvictOldest)
	switch a.refuse {
	case "per_user":
		r.mu.Unlock()
		r.reject(sid, user, "per_user", msgTooManyForUser)
		return
	case "total":
		r.mu.Unlock()
		r.reject(sid, user, "total", msgTooManyShells)
		return
	}
	evict := r.shells[a.evict]
	if evict != nil {
		delete(r.shells, evict.sid) // its slot goes to the new session now
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &shellSession{
		r: r, sid: sid, userID: user, created: r.now(),
		q:    r.mux.NewQueue(r.opts.QueueLimit),
		cols: cols, rows: rows,
		stopCh: make(chan stopRequest, 1),
		ctx:    ctx, cancel: cancel,
	}
	s.in = newInputQueue(inputLimit, r.opts.Recorder.TerminalBytesIn,
		func(err error) { r.log.Debug("terminal write failed", "session_id", sid, "error", err) })
	s.born = r.mono()
	s.lastInput.Store(int64(s.born))
	s.lastPingAt = r.mux.UpTime()
	s.peerEpoch.Store(r.epoch)
	r.shells[sid] = s
	r.wg.Add(1)
	r.mu.Unlock()
	r.wake() // its expiry and first ping are due

	if evict != nil {
		r.log.Info("evicting a session of the user for a new one", "event", "session_evict",
			"session_id", evict.sid, "user_id", user, "new_session_id", sid)
		evict.requestStop(ReasonEvicted, a.evictNotice, r.opts.StopGrace)
	}
	go s.run()
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

func (r *Router) reject(sid, user, limit, text string) {
	if r.plog.reject.allow(r.now()) {
		r.log.Warn("session refused: limit reached", "event", "limit_reject", "limit", limit,
			"session_id", logging.Clip(sid), "user_id", logging.Clip(user), "suppressed", r.plog.reject.takeSuppressed())
	}
	r.opts.Recorder.LimitRejected(limit)
	r.replyShell(sid, wire.ShellNew, wire.StatusError, text)
}

// remove takes s out of the table if it is still there.
func (r *Router) remove(s *shellSession) {
	r.mu.Lock()
	if r.shells[s.sid] == s {
		delete(r.shells, s.sid)
	}
	r.mu.Unlock()
}

func (r *Router) stopShell(h *wire.Header, body []byte) {
	sid, user := h.SessionID, h.StringProp(wire.PropUserID)
	reason := ReasonStop
	if string(body) == "user disconnected" {
		reason = ReasonUser
	}
	if sid == "" {
		if user == "" {
			r.replyShell("", wire.ShellStop, wire.StatusError, "StopShellMessage: sessionId not given and userId empty")
			return
		}
		r.mu.Lock()
		var mine []*shellSession
		for _, s := range r.shells {
			if s.userID == user {
				mine = append(mine, s)
			}
		}
		r.mu.Unlock()
		for _, s := range mine {
			s.requestStop(reason, "", r.opts.StopGrace)
		}
		r.replyShell("", wire.ShellStop, wire.StatusNormal, "")
		return
	}
	s := r.lookup(sid)
	if s == nil {
		r.replyShell(sid, wire.ShellStop, wire.StatusError, "routeMessage: StopShellMessage: session not found for id "+sid)
		return
	}
	s.requestStop(reason, "", r.opts.StopGrace)
	r.replyShell(sid, wire.ShellStop, wire.StatusNormal, "")
}

// requestStop frees the session's slot at once and hands the teardown to
// the session's own goroutine; the caller never waits for the shell.
func (s *shellSession) requestStop(reason, notice string, grace time.Duration) {
	s.stopOnce.Do(func() {
		s.r.remove(s)
		s.stopCh <- stopRequest{reason: reason, notice: notice, grace: grace}
		s.cancel()
	})
}

func (s *shellSession) resize(cols, rows uint16) {
	if cols == 0 || rows == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cols, s.rows = cols, rows
	if s.proc != nil {
		if err := s.proc.Resize(cols, rows); err != nil {
			s.r.log.Warn("resize failed", "session_id", s.sid, "error", err)
		}
	}
}

// supervise runs on every janitor sweep: expiry, pings, pong timeout. It
// returns how long until it is next due (0: not while nothing changes) and
// whether it queued a ping; a ping goes up to early before it is due.
// Expiry runs on the router's monotonic clock; the health check on link-up
// time, so a flaky link never ends a session whose peer could not answer.
func (s *shellSession) supervise(now, early time.Duration) (time.Duration, bool) {
	o := &s.r.opts
	var next time.Duration
	if o.AbsoluteTimeout > 0 {
		left := s.born + o.AbsoluteTimeout - now
		if left <= 0 {
			s.requestStop(ReasonAbsoluteExpired, fmt.Sprintf("session expired: open for %s", o.AbsoluteTimeout), o.StopGrace)
			return 0, false
		}
		next = sooner(next, left)
	}
	if o.IdleTimeout > 0 {
		left := time.Duration(s.lastInput.Load()) + o.IdleTimeout - now
		if left <= 0 {
			s.requestStop(ReasonIdleExpired, fmt.Sprintf("session expired: idle for %s", o.IdleTimeout), o.StopGrace)
			return 0, false
		}
		next = sooner(next, left)
	}
	up, linkUp := s.r.mux.UpState()
	s.hmu.Lock()
	late := o.PongTimeout > 0 && s.awaiting && up-s.pingLeft >= o.PongTimeout
	ping := !late && o.PingInterval > 0 && !s.pingQueued && up-s.lastPingAt >= o.PingInterval-early
	if ping {
		s.pingQueued, s.lastPingAt = true, up
	}
	if linkUp && !late {
		// Link-up time stands still while the link is down; the mux
		// wakes the janitor when it comes back.
		if o.PongTimeout > 0 && s.awaiting {
			next = sooner(next, s.pingLeft+o.PongTimeout-up)
		}
		if o.PingInterval > 0 && !s.pingQueued {
			next = sooner(next, s.lastPingAt+o.PingInterval-up)
		}
	}
	s.hmu.Unlock()
	switch {
	case late:
		s.requestStop(ReasonHealthTimeout, fmt.Sprintf("health check failed: no pong for %s", o.PongTimeout), o.StopGrace)
		return 0, false
	case ping:
		m := shellMsg(s.sid, wire.ShellPing, wire.StatusControl, "")
		// The peer re-arms its own health timer with this; it is the
		// very deadline this side keeps (upstream: 65 s).
		m.Header.Properties[wire.PropTimeout] = int((o.PongTimeout + time.Second - 1) / time.Second)
		s.sendControl(m, s.pingSent)
	}
	return next, ping
}

// pingSent runs (in the link's writer) when a ping left: its pong deadline
// starts now, unless an older ping is still unanswered. The janitor learns
// of the new deadline and the next ping's time.
func (s *shellSession) pingSent() {
	up := s.r.mux.UpTime()
	s.hmu.Lock()
	s.pingQueued = false
	if !s.awaiting {
		s.awaiting, s.pingLeft = true, up
	}
	s.hmu.Unlock()
	s.r.wake()
}

// sendControl queues a small frame behind the session's output even when
// the queue is full; it waits for the link if need be, and sent (may be
// nil) is told when it left. Once the queue is closed it goes on the
// router's.
func (s *shellSession) sendControl(m *wire.ProtoMsg, sent func()) {
	b, err := wire.Marshal(m)
	if err != nil {
		s.r.log.Error("encode", "error", err)
		return
	}
	if !s.q.Control(b, sent) {
		s.r.send(m)
	}
}

// run is the session's supervisor goroutine: start the shell, pump its
// output and input, and tear everything down on exit or stop.
func (s *shellSession) run() {
	r := s.r
	defer r.wg.Done()
	defer s.q.Close()
	defer s.cancel()

	s.mu.Lock()
	cols, rows := s.cols, s.rows
	s.mu.Unlock()
	proc, err := r.opts.Reaper.Start(shell.Spec{Command: r.opts.ShellCommand, Args: r.opts.ShellArgs,
		Account: r.opts.Account, Lang: r.opts.Lang, Cols: cols, Rows: rows})
	if err != nil {
		r.remove(s)
		r.log.Error("shell failed to start", "event", "session_start_failed", "session_id", s.sid, "user_id", s.userID, "error", err)
		s.sendControl(shellMsg(s.sid, wire.ShellNew, wire.StatusError, "failed to start shell: "+err.Error()), nil)
		return
	}
	s.mu.Lock()
	s.proc = proc
	if s.cols != cols || s.rows != rows { // a resize raced the start
		_ = proc.Resize(s.cols, s.rows)
	}
	s.mu.Unlock()

	s.sendControl(shellMsg(s.sid, wire.ShellNew, wire.StatusNormal, msgShellStarted), nil)
	r.log.Info("session opened", "event", "session_open", "session_id", s.sid, "user_id", s.userID,
		"proto", "shell", "pid", proc.Pid(), "cols", cols, "rows", rows)
	r.opts.Recorder.SessionOpened("shell")
	r.opts.Changed()

	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		s.pumpOutput(proc)
	}()
	s.in.Start(proc)

	var req stopRequest
	select {
	case req = <-s.stopCh:
		// Tell the peer first, behind the output it already has, so the
		// notice is not held up by the teardown.
		if req.notice != "" {
			s.sendControl(shellMsg(s.sid, wire.ShellStop, wire.StatusError, req.notice), nil)
			req.notice = ""
		}
		proc.Stop(req.grace)
	case <-proc.Done():
		// The shell exited by itself: end what it left behind with the
		// terminal still open, deliver its last output, then tell the
		// peer.
		req = stopRequest{reason: ReasonShellExit, notice: exitNotice(proc.ExitErr()), grace: r.opts.StopGrace}
		r.remove(s)
		s.stopOnce.Do(func() {}) // later stop requests are moot
		proc.Finish(req.grace)
		<-proc.Stopped()
		s.drain(pumpDone, req.grace)
	}
	s.cancel() // unblocks a pump waiting for queue room
	<-proc.Stopped()
	_ = proc.Close()
	<-pumpDone
	s.in.End()
	if req.notice != "" {
		s.sendControl(shellMsg(s.sid, wire.ShellStop, wire.StatusError, req.notice), nil)
	}
	d := r.mono() - s.born
	r.log.Info("session closed", "event", "session_close", "session_id", s.sid, "user_id", s.userID,
		"proto", "shell", "reason", req.reason, "duration", d.Round(time.Millisecond).String())
	r.opts.Recorder.SessionClosed("shell", req.reason, d)
	r.opts.Changed()
}

func exitNotice(err error) string {
	if err == nil {
		return "shell exited: exit status 0"
	}
	return "shell exited: " + err.Error()
}

// drain waits for the pump to read the terminal to its end (EIO once no
// process holds it) after the shell exited. It waits as long as the pump
// makes progress or waits for queue room (back-pressure is not an end);
// a pump idle in a read for a whole grace means someone outside the
// session still holds the terminal, and the master is closed under it.
func (s *shellSession) drain(pumpDone <-chan struct{}, grace time.Duration) {
	grace = max(grace, 100*time.Millisecond)
	t := time.NewTicker(grace)
	defer t.Stop()
	last := s.reads.Load()
	for {
		select {
		case <-pumpDone:
			return
		case <-s.ctx.Done():
			return
		case <-s.r.done:
			return
		case <-t.C:
			n := s.reads.Load()
			if n == last && s.inRead.Load() {
				return
			}
			last = n
		}
	}
}

// pumpOutput sends pty output the moment a read returns: a busy shell fills
// big frames by itself while an echo goes out at once. It blocks on a full
// queue (back-pressure, also while the link is down) and ends when the pty
// fails or the session stops.
func (s *shellSession) pumpOutput(proc *shell.Process) {
	overhead := wire.ShellOutputOverhead(len(s.sid))
	for {
		s.inRead.Store(true)
		buf, n, err := proc.ReadPooled(s.r.getBuf, s.r.putBuf)
		s.inRead.Store(false)
		s.reads.Add(1)
		if n > 0 {
			frame := wire.AppendShellOutput(make([]byte, 0, n+overhead), s.sid, buf[:n])
			s.r.putBuf(buf)
			if perr := s.q.Put(s.ctx, frame); perr != nil {
				return // stopping
			}
			s.r.opts.Recorder.TerminalBytesOut(n)
		} else if buf != nil {
			s.r.putBuf(buf)
		}
		if err != nil {
			return
		}
	}
}
