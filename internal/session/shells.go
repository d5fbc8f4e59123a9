package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-agent/tether/internal/link"
	"github.com/tether-agent/tether/internal/logging"
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
	created time.Time
	q       *link.Queue

	// Input waiting for the pty; a writer goroutine exists only while
	// there is some.
	inMu      sync.Mutex
	inBuf     [][]byte
	inBytes   int
	writing   bool
	inDone    bool
	inWriters sync.WaitGroup

	lastInputNano atomic.Int64
	lastPongNano  atomic.Int64
	lastPingNano  atomic.Int64
	peerEpoch     atomic.Uint64 // router epoch of the peer's latest message

	mu         sync.Mutex
	proc       *shell.Process
	cols, rows uint16

	stopOnce sync.Once
	stopCh   chan stopRequest // capacity 1: the first request wins
	ctx      context.Context  // ends when the session is stopping
	cancel   context.CancelFunc
}

func (s *shellSession) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.Pid()
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
		s.lastInputNano.Store(time.Now().UnixNano())
		if len(m.Body) == 0 {
			return
		}
		if !s.write(m.Body) {
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
		w, okw := h.IntProp(wire.PropTerminalWidth)
		ht, okh := h.IntProp(wire.PropTerminalHeight)
		if okw && okh {
			s.resize(uint16(w), uint16(ht))
		}
	case wire.ShellStop:
		r.stopShell(h, m.Body)
	case wire.ShellPong:
		if s := r.lookup(h.SessionID); s != nil {
			s.lastPongNano.Store(time.Now().UnixNano())
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

func (r *Router) newShell(h *wire.Header) {
	sid, user := h.SessionID, h.StringProp(wire.PropUserID)
	cols, rows := r.opts.DefaultCols, r.opts.DefaultRows
	w, okw := h.IntProp(wire.PropTerminalWidth)
	ht, okh := h.IntProp(wire.PropTerminalHeight)
	if okw && okh && w > 0 && ht > 0 {
		cols, rows = uint16(w), uint16(ht)
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
	var mine []*shellSession
	for _, s := range r.shells {
		if s.userID == user {
			mine = append(mine, s)
		}
	}
	var evict *shellSession
	evictNotice := "session replaced by a newer session of the same user"
	if len(mine) >= r.opts.MaxPerUser {
		sortedByIdle(mine)
		// Unlike upstream, a session orphaned by a lost connection does
		// not lock its user out until its health check gives up.
		for _, o := range mine {
			if o.peerEpoch.Load() < r.epoch {
				evict, evictNotice = o, "session replaced: its connection was lost"
				break
			}
		}
		if evict == nil && r.opts.EvictOldest && len(mine) > 0 {
			evict = mine[0]
		}
		if evict == nil {
			r.mu.Unlock()
			r.reject(sid, user, "per_user", msgTooManyForUser)
			return
		}
		delete(r.shells, evict.sid) // its slot goes to the new session now
	}
	if len(r.shells) >= r.opts.MaxTotal {
		if evict != nil {
			r.shells[evict.sid] = evict
		}
		r.mu.Unlock()
		r.reject(sid, user, "total", msgTooManyShells)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &shellSession{
		r: r, sid: sid, userID: user, created: time.Now(),
		q:    r.mux.NewQueue(r.opts.QueueLimit),
		cols: cols, rows: rows,
		stopCh: make(chan stopRequest, 1),
		ctx:    ctx, cancel: cancel,
	}
	now := s.created.UnixNano()
	s.lastInputNano.Store(now)
	s.lastPongNano.Store(now)
	s.lastPingNano.Store(now)
	s.peerEpoch.Store(r.epoch)
	r.shells[sid] = s
	r.wg.Add(1)
	r.mu.Unlock()

	if evict != nil {
		r.log.Info("evicting the user's oldest idle session for a new one", "event", "session_evict",
			"session_id", evict.sid, "user_id", user, "new_session_id", sid)
		evict.requestStop(ReasonEvicted, evictNotice, r.opts.StopGrace)
	}
	go s.run()
}

func (r *Router) reject(sid, user, limit, text string) {
	if r.plog.reject.allow(time.Now()) {
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

// supervise runs on every janitor tick: expiry, pings, pong timeout.
func (s *shellSession) supervise(now time.Time) {
	o := &s.r.opts
	n := now.UnixNano()
	switch {
	case o.AbsoluteTimeout > 0 && now.Sub(s.created) >= o.AbsoluteTimeout:
		s.requestStop(ReasonAbsoluteExpired, fmt.Sprintf("session expired: open for %s", o.AbsoluteTimeout), o.StopGrace)
	case o.IdleTimeout > 0 && time.Duration(n-s.lastInputNano.Load()) >= o.IdleTimeout:
		s.requestStop(ReasonIdleExpired, fmt.Sprintf("session expired: idle for %s", o.IdleTimeout), o.StopGrace)
	case o.PongTimeout > 0 && time.Duration(n-s.lastPongNano.Load()) >= o.PongTimeout:
		s.requestStop(ReasonHealthTimeout, fmt.Sprintf("health check failed: no pong for %s", o.PongTimeout), o.StopGrace)
	case o.PingInterval > 0 && time.Duration(n-s.lastPingNano.Load()) >= o.PingInterval:
		s.lastPingNano.Store(n)
		m := shellMsg(s.sid, wire.ShellPing, wire.StatusControl, "")
		// The peer re-arms its own health timer with this; give it a
		// little more than our interval, as upstream does (60 s → 65).
		m.Header.Properties[wire.PropTimeout] = int((o.PingInterval + 5*time.Second) / time.Second)
		s.sendNow(m)
	}
}

// sendNow queues a frame without waiting: on the session's queue so it
// keeps its place after earlier output, else on the router's.
func (s *shellSession) sendNow(m *wire.ProtoMsg) {
	b, err := wire.Marshal(m)
	if err != nil {
		s.r.log.Error("encode", "error", err)
		return
	}
	if !s.q.TryPut(b) {
		s.r.send(m)
	}
}

// sendWait queues a frame behind the session's output, waiting up to d for
// room.
func (s *shellSession) sendWait(m *wire.ProtoMsg, d time.Duration) {
	b, err := wire.Marshal(m)
	if err != nil {
		s.r.log.Error("encode", "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.q.Put(ctx, b); err != nil && !errors.Is(err, link.ErrDown) {
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
	proc, err := shell.Start(shell.Spec{Command: r.opts.ShellCommand, Args: r.opts.ShellArgs,
		Account: r.opts.Account, Lang: r.opts.Lang, Cols: cols, Rows: rows})
	if err != nil {
		r.remove(s)
		r.log.Error("shell failed to start", "event", "session_start_failed", "session_id", s.sid, "user_id", s.userID, "error", err)
		s.sendWait(shellMsg(s.sid, wire.ShellNew, wire.StatusError, "failed to start shell: "+err.Error()), time.Second)
		return
	}
	s.mu.Lock()
	s.proc = proc
	if s.cols != cols || s.rows != rows { // a resize raced the start
		_ = proc.Resize(s.cols, s.rows)
	}
	s.mu.Unlock()

	s.sendWait(shellMsg(s.sid, wire.ShellNew, wire.StatusNormal, msgShellStarted), time.Second)
	r.log.Info("session opened", "event", "session_open", "session_id", s.sid, "user_id", s.userID,
		"proto", "shell", "pid", proc.Pid(), "cols", cols, "rows", rows)
	r.opts.Recorder.SessionOpened("shell")
	r.opts.Changed()

	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		s.pumpOutput(proc)
	}()
	s.startInput(proc)

	var req stopRequest
	select {
	case req = <-s.stopCh:
		// Tell the peer first, behind the output it already has, so the
		// notice is not held up by the teardown.
		if req.notice != "" {
			s.sendNow(shellMsg(s.sid, wire.ShellStop, wire.StatusError, req.notice))
			req.notice = ""
		}
		proc.Stop(req.grace)
	case <-proc.Done():
		// The shell exited by itself: end what it left behind, let the
		// pump deliver its last output, then tell the peer.
		req = stopRequest{reason: ReasonShellExit, notice: exitNotice(proc.ExitErr()), grace: r.opts.StopGrace}
		r.remove(s)
		s.stopOnce.Do(func() {}) // later stop requests are moot
		proc.Stop(req.grace)
		<-pumpDone
	}
	s.cancel() // unblocks a pump waiting for queue room and the input pump
	<-proc.Stopped()
	<-pumpDone
	s.endInput()
	if req.notice != "" {
		s.sendWait(shellMsg(s.sid, wire.ShellStop, wire.StatusError, req.notice), time.Second)
	}
	d := time.Since(s.created)
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

// pumpOutput sends pty output the moment a read returns: a busy shell fills
// big frames by itself while an echo goes out at once. It blocks on a full
// queue (back-pressure) and ends when the pty fails or the session stops.
func (s *shellSession) pumpOutput(proc *shell.Process) {
	overhead := wire.ShellOutputOverhead(len(s.sid))
	for {
		buf, n, err := proc.ReadPooled(s.r.getBuf, s.r.putBuf)
		if n > 0 {
			frame := wire.AppendShellOutput(make([]byte, 0, n+overhead), s.sid, buf[:n])
			s.r.putBuf(buf)
			if perr := s.q.Put(s.ctx, frame); perr == nil {
				s.r.opts.Recorder.TerminalBytesOut(n)
			} else if !errors.Is(perr, link.ErrDown) {
				return // stopping
			}
		} else if buf != nil {
			s.r.putBuf(buf)
		}
		if err != nil {
			return
		}
	}
}

// write takes terminal input from the read path. When nothing is queued it
// writes straight to the pty without waiting; what the pty does not take
// goes to a writer goroutine that lives only while input is pending. It
// reports false when the input had to be dropped.
func (s *shellSession) write(b []byte) bool {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.inDone {
		return true // stopping: input is moot
	}
	s.mu.Lock()
	proc := s.proc
	s.mu.Unlock()
	if !s.writing && proc != nil {
		n, err := proc.TryWrite(b)
		if err != nil {
			s.r.log.Debug("terminal write failed", "session_id", s.sid, "error", err)
			return true
		}
		s.r.opts.Recorder.TerminalBytesIn(n)
		b = b[n:]
		if len(b) == 0 {
			return true
		}
	}
	if s.inBytes+len(b) > inputLimit {
		return false
	}
	s.inBuf = append(s.inBuf, b)
	s.inBytes += len(b)
	if !s.writing && proc != nil {
		s.startWriterLocked(proc)
	}
	return true
}

// startWriterLocked starts the input writer; s.inMu is held.
func (s *shellSession) startWriterLocked(proc *shell.Process) {
	s.writing = true
	s.inWriters.Add(1)
	go func() {
		defer s.inWriters.Done()
		for {
			s.inMu.Lock()
			if len(s.inBuf) == 0 || s.inDone {
				s.inBuf, s.inBytes, s.writing = nil, 0, false
				s.inMu.Unlock()
				return
			}
			b := s.inBuf[0]
			s.inBuf[0] = nil
			s.inBuf = s.inBuf[1:]
			s.inBytes -= len(b)
			s.inMu.Unlock()
			if _, err := proc.Write(b); err != nil {
				s.r.log.Debug("terminal write failed", "session_id", s.sid, "error", err)
				s.inMu.Lock()
				s.inBuf, s.inBytes, s.writing = nil, 0, false
				s.inMu.Unlock()
				return
			}
			s.r.opts.Recorder.TerminalBytesIn(len(b))
		}
	}()
}

// startInput hands input that arrived while the shell was starting to a
// writer.
func (s *shellSession) startInput(proc *shell.Process) {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if len(s.inBuf) > 0 && !s.writing && !s.inDone {
		s.startWriterLocked(proc)
	}
}

// endInput drops pending input and waits for a writer to finish (it ends
// once the pty master is closed).
func (s *shellSession) endInput() {
	s.inMu.Lock()
	s.inDone = true
	s.inBuf, s.inBytes = nil, 0
	s.inMu.Unlock()
	s.inWriters.Wait()
}
