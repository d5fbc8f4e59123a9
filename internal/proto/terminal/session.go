package terminal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/shell"
	"github.com/tether-agent/tether/internal/utmp"
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

// session is one terminal: it owns its pty, process and queue.
type session struct {
	t       *Protocol
	table   proto.Table
	lease   proto.Lease
	userID  string
	created time.Time // with its monotonic reading, for the duration
	q       *mux.Queue
	in      *inputQueue

	// Health check, in link-up time (mux.UpTime): a ping is queued every
	// PingInterval; its deadline runs from when it actually left.
	hmu        sync.Mutex
	pingQueued bool          // a ping waits in the queue
	lastPingAt time.Duration // up-time when the latest ping was queued
	awaiting   bool          // a ping left and no pong came since
	pingLeft   time.Duration // up-time when the oldest unanswered ping left
	pings      int           // pings queued since the peer attached

	mu         sync.Mutex
	proc       *shell.Process
	cols, rows uint16

	// Attachment, under omu, which the pump takes once per read: the sid
	// (a reattach re-keys it), whether the peer is deemed gone and its
	// output only recorded, and the replay ring.
	omu      sync.Mutex
	sid      string
	detached bool
	discard  bool
	// sendCtx ends when output is to be discarded: it lets go of a pump
	// blocked on a full queue for a peer that is gone.
	sendCtx    context.Context
	sendCancel context.CancelFunc
	sentUpTo   uint64 // ring total up to which the peer was sent output
	ring       ring

	reads  atomic.Int64 // pty reads, to tell an idle pump from a busy one
	inRead atomic.Bool

	stopOnce sync.Once
	stopCh   chan stopRequest // capacity 1: the first request wins
	ctx      context.Context  // ends when the session is stopping
	cancel   context.CancelFunc

	// Hand-over to the next run of the daemon (restore.go).
	key    string          // its record's and stored descriptor's name; "" = not kept
	handCh chan chan *Kept // capacity 1: a hand-over request
	ended  chan struct{}   // closed when run returns
}

// Handle takes a message of a sid that has no session: a "new", or one
// that gets upstream's answer for a session that does not exist.
func (t *Protocol) Handle(tb proto.Table, m *wire.ProtoMsg) {
	h := &m.Header
	switch h.MsgType {
	case wire.ShellNew:
		t.newShell(tb, m)
	case wire.ShellData:
		tb.Reply(shellMsg(h.SessionID, wire.ShellData, wire.StatusError, msgNoSession))
	case wire.ShellResize:
		t.log.Debug("resize for unknown session", "session_id", h.SessionID)
	case wire.ShellStop:
		t.stopShell(tb, nil, h, m.Body)
	case wire.ShellPong:
	default:
		tb.Reply(unknownMessage(m))
	}
}

// id is the session's current sid.
func (s *session) id() string {
	s.omu.Lock()
	defer s.omu.Unlock()
	return s.sid
}

// Handle takes a message of the session, from the read loop.
func (s *session) Handle(m *wire.ProtoMsg) {
	h := &m.Header
	switch h.MsgType {
	case wire.ShellNew:
		s.table.Reply(shellMsg(h.SessionID, wire.ShellNew, wire.StatusError, msgAlreadyRunning))
	case wire.ShellData:
		s.lease.Active()
		if len(m.Body) == 0 {
			return
		}
		if !s.in.Write(m.Body) {
			// The shell has not read its terminal for a long time; say
			// so rather than stall every other session.
			s.table.Reply(shellMsg(h.SessionID, wire.ShellData, wire.StatusError, "terminal input queue full: input dropped"))
		}
	case wire.ShellResize:
		if cols, rows, ok := termSize(h); ok {
			s.resize(cols, rows)
		}
	case wire.ShellStop:
		s.t.stopShell(s.table, s, h, m.Body)
	case wire.ShellPong:
		s.hmu.Lock()
		s.awaiting = false
		s.hmu.Unlock()
	default:
		s.table.Reply(unknownMessage(m))
	}
}

// unknownMessage is upstream's answer to a shell message it does not
// know (the router gives the same one when the terminal is disabled).
func unknownMessage(m *wire.ProtoMsg) *wire.ProtoMsg {
	return shellMsg(m.Header.SessionID, m.Header.MsgType, wire.StatusError,
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

func (t *Protocol) newShell(tb proto.Table, m *wire.ProtoMsg) {
	h := &m.Header
	sid, user := h.SessionID, h.StringProp(wire.PropUserID)
	cols, rows := t.opts.DefaultCols, t.opts.DefaultRows
	if c, rr, ok := termSize(h); ok {
		cols, rows = c, rr
	}
	open := func(l proto.Lease) proto.AdmittedSession {
		return t.newSession(tb, l, sid, user, cols, rows)
	}
	tb.Admit(sid, user, m, open, func(as proto.AdmittedSession, reattached bool, err error) {
		t.admitted(tb, sid, as, reattached, err)
	})
}

// newSession builds a session around its lease; it starts nothing.
func (t *Protocol) newSession(tb proto.Table, l proto.Lease, sid, user string, cols, rows uint16) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		t: t, table: tb, lease: l, sid: sid, userID: user, created: time.Now(),
		q:    l.Queue(),
		cols: cols, rows: rows,
		stopCh: make(chan stopRequest, 1),
		ctx:    ctx, cancel: cancel,
		handCh: make(chan chan *Kept, 1), ended: make(chan struct{}),
	}
	s.ring.max = t.opts.ReplayBuffer
	s.sendCtx, s.sendCancel = context.WithCancel(ctx)
	s.in = newInputQueue(inputLimit, t.opts.Recorder.TerminalBytesIn,
		func(err error) { t.log.Debug("terminal write failed", "session_id", s.id(), "error", err) })
	s.lastPingAt = l.UpTime()
	return s
}

// admitted answers a "new" once the table decided on it.
func (t *Protocol) admitted(tb proto.Table, sid string, as proto.AdmittedSession, reattached bool, err error) {
	switch {
	case errors.Is(err, proto.ErrUserLimit):
		tb.Reply(shellMsg(sid, wire.ShellNew, wire.StatusError, msgTooManyForUser))
	case errors.Is(err, proto.ErrTotalLimit):
		tb.Reply(shellMsg(sid, wire.ShellNew, wire.StatusError, msgTooManyShells))
	case errors.Is(err, proto.ErrExists):
		tb.Reply(shellMsg(sid, wire.ShellNew, wire.StatusError, msgAlreadyRunning))
	case err != nil:
		tb.Reply(shellMsg(sid, wire.ShellNew, wire.StatusError, "failed to start shell: "+err.Error()))
	case reattached:
		// The table has re-keyed it and called Attach: the reply, the
		// notice and the replay are queued.
	default:
		go as.(*session).run()
	}
}

// stopShell answers a "stop"; s is the session of its sid, if any.
func (t *Protocol) stopShell(tb proto.Table, s *session, h *wire.Header, body []byte) {
	sid, user := h.SessionID, h.StringProp(wire.PropUserID)
	reason := proto.ReasonStop
	if string(body) == stopUserGone {
		reason = proto.ReasonUser
	}
	if sid == "" {
		if user == "" {
			tb.Reply(shellMsg("", wire.ShellStop, wire.StatusError, "StopShellMessage: sessionId not given and userId empty"))
			return
		}
		tb.StopUser(user, reason)
		tb.Reply(shellMsg("", wire.ShellStop, wire.StatusNormal, ""))
		return
	}
	if s == nil {
		tb.Reply(shellMsg(sid, wire.ShellStop, wire.StatusError, "routeMessage: StopShellMessage: session not found for id "+sid))
		return
	}
	// The server's own stops are not the user's wish to end the shell:
	// its recording cut the session (a long cat must not kill the job
	// behind it), or the user's connection went away (a closed tab, a
	// lost laptop link; the real server mostly fails to say so at all).
	// Such a session waits detached for its user to come back.
	if why := serverStop(string(body)); why != "" && s.lease.Lost(why) {
		tb.Reply(shellMsg(sid, wire.ShellStop, wire.StatusNormal, ""))
		return
	}
	s.Stop(reason, "", t.opts.StopGrace)
	tb.Reply(shellMsg(sid, wire.ShellStop, wire.StatusNormal, ""))
}

// Bodies of the stops the server sends on its own (PROTOCOL.md 2.9, 2.9.1).
const (
	stopByteLimit = "session byte limit exceeded"
	stopUserGone  = "user disconnected"
)

// serverStop says why a stop with body came from the server rather than
// from the user's client ("" for a client's stop).
func serverStop(body string) string {
	switch body {
	case stopByteLimit:
		return proto.DetachByteLimit
	case stopUserGone:
		return proto.DetachUserGone
	}
	return ""
}

// Stop frees the session's slot at once and hands the teardown to the
// session's own goroutine; the caller never waits for the shell.
func (s *session) Stop(reason, notice string, grace time.Duration) {
	s.stopOnce.Do(func() {
		s.lease.Release()
		s.stopCh <- stopRequest{reason: reason, notice: notice, grace: grace}
		s.cancel()
	})
}

func (s *session) resize(cols, rows uint16) {
	if cols == 0 || rows == 0 {
		return
	}
	s.mu.Lock()
	s.cols, s.rows = cols, rows
	var err error
	if s.proc != nil {
		err = s.proc.Resize(cols, rows)
	}
	s.mu.Unlock()
	if err != nil {
		s.t.log.Warn("resize failed", "session_id", s.id(), "error", err)
	}
}

// Supervise runs on every janitor sweep: pings and the pong timeout. It
// returns how long of link-up time until it is next due (0: not while
// nothing changes) and whether it queued a ping; a ping goes up to early
// before it is due. The health check runs on link-up time, so a flaky
// link never ends a session whose peer could not answer.
func (s *session) Supervise(early time.Duration) (time.Duration, bool) {
	o := &s.t.opts
	var next time.Duration
	up, linkUp := s.lease.UpState()
	s.omu.Lock()
	detached := s.detached
	s.omu.Unlock()
	s.hmu.Lock()
	// A detached session's peer is not expected to answer: its own
	// timeout ends it, not the health check.
	late := !detached && o.PongTimeout > 0 && s.awaiting && up-s.pingLeft >= o.PongTimeout
	interval := o.PingInterval
	if s.pings == 0 {
		// The Mender UI arms a fixed 65 s timer on "new" that only a
		// ping restarts.
		interval = min(interval, FirstPingMax)
	}
	ping := !late && interval > 0 && !s.pingQueued && up-s.lastPingAt >= interval-early
	if ping {
		s.pingQueued, s.lastPingAt = true, up
		s.pings++
	}
	if linkUp && !late {
		// Link-up time stands still while the link is down; the mux
		// wakes the janitor when it comes back.
		if o.PongTimeout > 0 && s.awaiting && !detached {
			next = proto.Sooner(next, s.pingLeft+o.PongTimeout-up)
		}
		if interval > 0 && !s.pingQueued {
			next = proto.Sooner(next, s.lastPingAt+interval-up)
		}
	}
	s.hmu.Unlock()
	switch {
	case late:
		notice := fmt.Sprintf("health check failed: no pong for %s", o.PongTimeout)
		if s.lease.Lost(proto.DetachHealth) {
			// A peer still there learns that its terminal ended; the
			// shell waits detached for its user.
			s.sendControl(shellMsg(s.id(), wire.ShellStop, wire.StatusError, notice), nil)
			return next, false
		}
		s.Stop(proto.ReasonHealthTimeout, notice, o.StopGrace)
		return 0, false
	case ping:
		s.sendPing()
	}
	return next, ping
}

// FirstPingMax bounds the wait for a session's first health ping, after
// "new" or a reattach, whatever the interval: the Mender UI closes a
// terminal that heard no ping within 65 s of opening it.
const FirstPingMax = 60 * time.Second

func (s *session) sendPing() {
	o := &s.t.opts
	m := shellMsg(s.id(), wire.ShellPing, wire.StatusControl, "")
	// The peer re-arms its own health timer with this; it is the very
	// deadline this side keeps (upstream: 65 s).
	m.Header.Properties[wire.PropTimeout] = int((o.PongTimeout + time.Second - 1) / time.Second)
	s.sendControl(m, s.pingSent)
}

// Probe sends a health ping now, unless one waits in the queue already
// (proto.AdmittedSession).
func (s *session) Probe() {
	up := s.lease.UpTime()
	s.hmu.Lock()
	if s.pingQueued {
		s.hmu.Unlock()
		return
	}
	s.pingQueued, s.lastPingAt = true, up
	s.pings++
	s.hmu.Unlock()
	s.sendPing()
}

// Detach deems the peer gone (proto.AdmittedSession); with discard the
// output goes only to the ring from now on.
func (s *session) Detach(discard bool) {
	s.omu.Lock()
	defer s.omu.Unlock()
	s.detached = true
	if discard && !s.discard {
		s.discard = true
		s.sentUpTo = s.ring.total
		s.sendCancel()
	}
}

// Attach gives the session a peer again (proto.AdmittedSession): its own
// peer (m nil) gets the output it missed while it was deemed gone; a new
// terminal gets the reply to its "new", a line saying whose shell this
// is, the output the ring holds, and its size (so full-screen programs
// redraw). Everything is queued without waiting, under omu, so no fresh
// output can come between.
func (s *session) Attach(sid string, m *wire.ProtoMsg) {
	s.hmu.Lock()
	s.awaiting, s.pings = false, 0
	s.lastPingAt = s.lease.UpTime()
	s.hmu.Unlock()

	s.mu.Lock()
	pid := 0
	if s.proc != nil {
		pid = s.proc.Pid()
	}
	s.mu.Unlock()

	s.omu.Lock()
	var missed []byte
	if m == nil {
		if s.discard {
			missed = s.ring.since(s.sentUpTo)
		}
	} else {
		s.sid = sid
		missed = s.ring.all()
	}
	if s.discard {
		s.sendCtx, s.sendCancel = context.WithCancel(s.ctx)
	}
	s.detached, s.discard = false, false
	if m != nil {
		s.sendControlLocked(shellMsg(sid, wire.ShellNew, wire.StatusNormal, msgShellStarted))
		s.sendControlLocked(shellMsg(sid, wire.ShellData, wire.StatusNormal, s.reattachNotice(pid, len(missed))))
	}
	for len(missed) > 0 {
		n := min(len(missed), s.t.opts.ReadBuffer)
		s.sendControlLocked(shellMsg(sid, wire.ShellData, wire.StatusNormal, string(missed[:n])))
		missed = missed[n:]
	}
	s.omu.Unlock()
	if m != nil {
		cols, rows, ok := termSize(&m.Header)
		s.redraw(cols, rows, ok)
	}
}

// sendControlLocked is sendControl for Attach, which holds omu.
func (s *session) sendControlLocked(m *wire.ProtoMsg) {
	b, err := wire.Marshal(m)
	if err != nil {
		s.t.log.Error("encode", "error", err)
		return
	}
	if !s.q.Control(b, nil) {
		s.table.Reply(m)
	}
}

// reattachNotice is the line a reattaching user sees first, in the
// terminal's own output.
func (s *session) reattachNotice(pid, missed int) string {
	return fmt.Sprintf("\r\n[tether: reattached to the shell started at %s (pid %d); its last %d bytes of output follow]\r\n",
		s.created.UTC().Format("2006-01-02 15:04:05 MST"), pid, missed)
}

// redraw applies a reattaching terminal's size. The kernel signals the
// shell only when the size changes, so an unchanged size is nudged, and
// a full-screen program repaints the new terminal either way.
func (s *session) redraw(cols, rows uint16, ok bool) {
	s.mu.Lock()
	if !ok {
		cols, rows = s.cols, s.rows
	}
	nudge := cols == s.cols && rows == s.rows && rows > 1
	s.mu.Unlock()
	if nudge {
		s.resize(cols, rows-1)
	}
	s.resize(cols, rows)
}

// pingSent runs (in the link's writer) when a ping left: its pong deadline
// starts now, unless an older ping is still unanswered. The janitor learns
// of the new deadline and the next ping's time.
func (s *session) pingSent() {
	up := s.lease.UpTime()
	s.hmu.Lock()
	s.pingQueued = false
	if !s.awaiting {
		s.awaiting, s.pingLeft = true, up
	}
	s.hmu.Unlock()
	s.lease.Wake()
}

// sendControl queues a small frame behind the session's output even when
// the queue is full; it waits for the link if need be, and sent (may be
// nil) is told when it left. Once the queue is closed it goes on the
// router's.
func (s *session) sendControl(m *wire.ProtoMsg, sent func()) {
	b, err := wire.Marshal(m)
	if err != nil {
		s.t.log.Error("encode", "error", err)
		return
	}
	if !s.q.Control(b, sent) {
		s.table.Reply(m)
	}
}

// run is the session's supervisor goroutine: start the shell, pump its
// output and input, and tear everything down on exit or stop.
func (s *session) run() {
	t := s.t
	sid := s.id() // for the start: a reattach comes later
	defer close(s.ended)
	defer s.lease.Done()
	defer s.q.Close()
	defer s.cancel()

	s.mu.Lock()
	cols, rows := s.cols, s.rows
	s.mu.Unlock()
	proc, err := t.opts.Reaper.Start(shell.Spec{Command: t.opts.ShellCommand, Args: t.opts.ShellArgs,
		Account: t.opts.Account, Lang: t.opts.Lang, Cols: cols, Rows: rows, SessionID: sid, UserID: s.userID})
	if err != nil {
		s.lease.Release()
		t.log.Error("shell failed to start", "event", "session_start_failed", "session_id", sid, "user_id", s.userID, "error", err)
		s.sendControl(shellMsg(sid, wire.ShellNew, wire.StatusError, "failed to start shell: "+err.Error()), nil)
		return
	}
	s.mu.Lock()
	s.proc = proc
	if s.cols != cols || s.rows != rows { // a resize raced the start
		_ = proc.Resize(s.cols, s.rows)
	}
	s.mu.Unlock()

	s.sendControl(shellMsg(sid, wire.ShellNew, wire.StatusNormal, msgShellStarted), nil)
	tty := proc.PtyName()
	t.log.Info("session opened", "event", "session_open", "session_id", sid, "user_id", s.userID,
		"proto", "shell", "pid", proc.Pid(), "tty", tty, "cols", cols, "rows", rows, "containment", proc.Containment())
	// Once per shell, here and at its end below: a reattach joins the
	// running shell and records nothing.
	login := s.recordLogin(tty, proc.Pid())
	s.keep(proc, cols, rows)
	t.opts.Recorder.SessionOpened("shell")
	t.opts.Changed()
	s.serve(proc, login)
}

// serve pumps a running shell's output and input until it exits, is
// stopped or is handed over, and tears it down unless handed over. login
// is the shell's utmp entry: closed when the shell ends, left standing
// when it is handed over to the next run, which closes it.
func (s *session) serve(proc *shell.Process, login *utmp.Entry) {
	t := s.t
	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		s.pumpOutput(proc)
	}()
	s.in.Start(proc)

	var req stopRequest
	select {
	case reply := <-s.handCh:
		s.handOver(proc, pumpDone, reply)
		return
	case req = <-s.stopCh:
		// Tell the peer first, behind the output it already has, so the
		// notice is not held up by the teardown.
		if req.notice != "" {
			s.sendControl(shellMsg(s.id(), wire.ShellStop, wire.StatusError, req.notice), nil)
			req.notice = ""
		}
		proc.Stop(req.grace)
	case <-proc.Done():
		// The shell exited by itself: end what it left behind with the
		// terminal still open, deliver its last output, then tell the
		// peer.
		req = stopRequest{reason: proto.ReasonShellExit, notice: exitNotice(proc.ExitErr()), grace: t.opts.StopGrace}
		s.lease.Release()
		s.stopOnce.Do(func() {}) // later stop requests are moot
		proc.Finish(req.grace)
		<-proc.Stopped()
		if limit := proc.LimitHit(); limit == shell.LimitMemory {
			// Killed whole by the kernel or systemd: say so rather
			// than leave the user with a bare "signal: killed".
			req.reason = proto.ReasonMemoryLimit
			req.notice = "shell ended: the session reached " + t.opts.Reaper.DescribeLimit(limit)
		}
		s.drain(pumpDone, req.grace)
	}
	s.cancel() // unblocks a pump waiting for queue room
	<-proc.Stopped()
	_ = proc.Close()
	<-pumpDone
	s.in.End()
	s.forget()
	s.recordLogout(login)
	if req.notice != "" {
		s.sendControl(shellMsg(s.id(), wire.ShellStop, wire.StatusError, req.notice), nil)
	}
	d := time.Since(s.created)
	t.log.Info("session closed", "event", "session_close", "session_id", s.id(), "user_id", s.userID,
		"proto", "shell", "reason", req.reason, "duration", d.Round(time.Millisecond).String())
	t.opts.Recorder.SessionClosed("shell", req.reason, d)
	t.opts.Changed()
}

// recordLogin writes the shell's login records: the configured account
// on the shell's terminal, from "tether:<user id>".
func (s *session) recordLogin(tty string, pid int) *utmp.Entry {
	r := s.t.opts.LoginRecords
	if r == nil || tty == "" {
		return nil
	}
	e, err := r.Login(utmp.Login{Line: tty, User: s.t.opts.Account.Name, Host: "tether:" + s.userID, PID: pid})
	if err != nil {
		s.t.log.Warn("login record not written", "session_id", s.id(), "error", err)
	}
	return e
}

func (s *session) recordLogout(e *utmp.Entry) {
	if err := e.Logout(); err != nil {
		s.t.log.Warn("logout record not written", "session_id", s.id(), "error", err)
	}
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
func (s *session) drain(pumpDone <-chan struct{}, grace time.Duration) {
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
		case <-s.lease.ShuttingDown():
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
// fails or the session stops. Every read is also kept in the session's
// replay ring; while the peer is deemed gone, only there.
//
// Output is read behind room for the frame header, so a big read becomes
// a frame in place and its buffer goes back to the pool once written: no
// copy and no garbage per frame (at 80 MB/s a fresh 32 KiB frame per read
// kept the collector busy). A small read is copied into a frame of its
// own size and the buffer returned at once, so frames waiting out a link
// drop never pin more memory than the queue is charged for.
func (s *session) pumpOutput(proc *shell.Process) {
	hdr := make([]byte, 0, frameHeadroom)
	var fb *[]byte // the pooled buffer of the current read
	get := func() []byte { fb = s.t.getBuf(); return (*fb)[frameHeadroom:] }
	put := func([]byte) { s.t.putBuf(fb) }
	idleCounts := s.t.opts.IdleCountsOutput
	for {
		s.inRead.Store(true)
		buf, n, err := proc.ReadPooled(get, put)
		s.inRead.Store(false)
		s.reads.Add(1)
		if n > 0 {
			if idleCounts {
				s.lease.Active()
			}
			// The ring's copy is the only cost of reattach here; sid
			// and the send context are read with it, so a reattach
			// (which holds omu) sees every byte either in the ring it
			// replays or in a frame queued behind the replay.
			s.omu.Lock()
			s.ring.write(buf[:n])
			sid, discard, sendCtx := s.sid, s.discard, s.sendCtx
			if !discard {
				s.sentUpTo = s.ring.total
			}
			s.omu.Unlock()
			if discard {
				s.t.putBuf(fb)
			} else if perr := s.send(sendCtx, sid, hdr, fb, n); perr != nil {
				if s.ctx.Err() != nil {
					return // stopping
				}
				// The peer went while the pump waited for room; the
				// output is in the ring.
			} else {
				s.t.opts.Recorder.TerminalBytesOut(n)
			}
		} else if buf != nil {
			s.t.putBuf(fb)
		}
		if err != nil {
			return
		}
	}
}

// sendCut queues n bytes of output as frames of at most hint bytes each,
// for a slow link (mux.Queue.FrameHint): a frame that takes a second on
// the wire is a second another session's keystroke echo waits behind it.
// The copies cost an allocation per frame, which only a slow link pays.
func (s *session) sendCut(ctx context.Context, sid string, fb *[]byte, n, hint int) error {
	defer s.t.putBuf(fb)
	out := (*fb)[frameHeadroom : frameHeadroom+n]
	for len(out) > 0 {
		c := out[:min(len(out), hint)]
		out = out[len(c):]
		frame := wire.AppendShellOutput(make([]byte, 0, len(c)+wire.ShellOutputOverhead(len(sid))), sid, c)
		if err := s.q.Put(ctx, frame); err != nil {
			return err
		}
	}
	return nil
}

// send queues n bytes of output read into the pooled buffer fb, behind
// frameHeadroom, as a frame of session sid. A big read becomes a frame in
// place, and the buffer goes back to the pool once written; a small one
// is copied into a frame of its own size and the buffer returned at once.
// The buffer is back in the pool, or owned by the queue, on return.
func (s *session) send(ctx context.Context, sid string, hdr []byte, fb *[]byte, n int) error {
	if hint := s.q.FrameHint(); hint > 0 && n > hint {
		return s.sendCut(ctx, sid, fb, n, hint)
	}
	if wire.ShellOutputOverhead(len(sid)) <= frameHeadroom && n >= s.t.opts.ReadBuffer/2 {
		h := wire.AppendShellOutputHeader(hdr[:0], sid, n)
		start := frameHeadroom - len(h)
		b := *fb
		copy(b[start:], h)
		err := s.q.PutPooled(ctx, b[start:frameHeadroom+n], cap(b), func() { s.t.putBuf(fb) })
		if err != nil {
			s.t.putBuf(fb)
		}
		return err
	}
	frame := wire.AppendShellOutput(make([]byte, 0, n+wire.ShellOutputOverhead(len(sid))), sid, (*fb)[frameHeadroom:frameHeadroom+n])
	s.t.putBuf(fb)
	return s.q.Put(ctx, frame)
}
