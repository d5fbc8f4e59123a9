// Package menderclient is the Mender client commands protocol (proto 4,
// docs/protocol.md §7): the server asks the device to run `check-update` or
// `send-inventory` of the Mender client, and the device answers with the
// outcome.
//
// Unlike upstream the command never runs on the read loop, it has a
// timeout, and a request that arrives while the same command runs joins
// that run instead of starting another. What a flood of requests costs is
// bounded: per session and command one goroutine and a counter of the
// answers it owes, whatever the number of requests.
package menderclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// Message types of proto 4.
const (
	TypeCheckUpdate   = "check-update"
	TypeSendInventory = "send-inventory"
)

// ErrTextUnknownType is upstream's answer to any other type.
const ErrTextUnknownType = "unknown message type"

// maxUnknownPending bounds the unknown-type answers a session holds while
// its queue is full; one more is dropped (the answer is a refusal that the
// server ignores for sid-less messages anyway). Types are at most 128
// bytes (the router refuses longer ones), so this is at most 2 KiB.
const maxUnknownPending = 16

// DefaultTimeout is Options.Timeout when unset.
const DefaultTimeout = 10 * time.Minute

// ChildPath is the PATH the client command runs with: the daemon's own
// environment (its token, NOTIFY_SOCKET, whatever its parent set) is not
// passed on.
const ChildPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ChildEnv is the client command's whole environment: PATH=ChildPath and
// the daemon's TZ and LANG if it has them (getenv is os.LookupEnv in the
// daemon).
func ChildEnv(getenv func(string) (string, bool)) []string {
	env := []string{"PATH=" + ChildPath}
	// Its time zone and language, so its own log lines read as the rest
	// of the system's; nothing else of the daemon's.
	for _, k := range []string{"TZ", "LANG"} {
		if v, ok := getenv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Options configure the protocol.
type Options struct {
	Log *slog.Logger
	// Binaries are tried in order; the first that exists runs
	// (default /usr/bin/mender-update, /usr/bin/mender).
	Binaries []string
	// Timeout ends a run that takes longer (default 10 min).
	Timeout time.Duration
	// Env is the command's whole environment (default ChildEnv of the
	// daemon's).
	Env []string
	// Exec runs a command as a child the daemon's reaper collects
	// (shell.Reaper.Exec; the reaper waits for every child). nil runs it
	// with os/exec's own wait, for a program without a reaper.
	Exec func(ctx context.Context, cmd *exec.Cmd, kill func(pid int)) error
	// Now is the clock of the log rate limits (default time.Now).
	Now func() time.Time
}

// Protocol runs the commands; runs are shared by every router session.
type Protocol struct {
	o   Options
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	runs map[string]*run // by command, while it runs
	wg   sync.WaitGroup

	// The server decides how often commands run and sessions drop
	// answers; neither may fill the journal.
	runLog     logging.RateLimit
	droppedLog logging.RateLimit
}

// run is one execution of a command; done is closed when err is set.
type run struct {
	done chan struct{}
	err  error
}

func (r *run) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// New builds the protocol. Close ends running commands.
func New(o Options) *Protocol {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(o.Binaries) == 0 {
		o.Binaries = []string{"/usr/bin/mender-update", "/usr/bin/mender"}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Env == nil {
		o.Env = ChildEnv(os.LookupEnv)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Protocol{o: o, log: o.Log, ctx: ctx, cancel: cancel, runs: make(map[string]*run)}
}

// Number is proto 4.
func (p *Protocol) Number() uint16 { return wire.ProtoMenderClient }

// Close kills running commands and waits for them to be reaped.
func (p *Protocol) Close() {
	p.cancel()
	p.wg.Wait()
}

// Open starts the protocol's state for one router session (or for the
// messages without a sid, which is how the server sends them).
func (p *Protocol) Open(sid string, out proto.Sender) proto.Session {
	ctx, cancel := context.WithCancel(p.ctx)
	return &session{p: p, sid: sid, out: out, ctx: ctx, cancel: cancel}
}

type session struct {
	p      *Protocol
	sid    string
	out    proto.Sender
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	cmds [2]pending // by command: check-update, send-inventory
	// unknown are the types still to be refused, oldest first; a
	// goroutine sends them while unknownBusy.
	unknown     []string
	unknownBusy bool
}

// pending is what a session owes for one command: while busy, one
// goroutine waits for r and then sends `owed` answers; requests that
// arrive once r has ended are counted in `next` and get a run of their
// own after that. Counters, not goroutines or queued messages, so a flood
// of requests costs nothing more.
type pending struct {
	busy   bool
	r      *run
	owed   int
	next   int
	userID string // of the latest request, for the next run's log line
}

func cmdIndex(typ string) int {
	switch typ {
	case TypeCheckUpdate:
		return 0
	case TypeSendInventory:
		return 1
	}
	return -1
}

// Handle starts (or joins) the command and answers when it ends; it never
// waits for it.
func (s *session) Handle(m *wire.ProtoMsg) {
	typ := m.Header.MsgType
	i := cmdIndex(typ)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 {
		s.refuseLocked(typ)
		return
	}
	c := &s.cmds[i]
	userID := m.Header.StringProp(wire.PropUserID)
	switch {
	case !c.busy:
		*c = pending{busy: true, r: s.p.start(typ, userID), owed: 1}
		s.p.wg.Add(1)
		go s.serve(typ, c)
	case c.r != nil && !c.r.ended():
		c.owed++
	default:
		// The run ended and its answers are leaving: this request asked
		// after it, so it gets the next one.
		c.next++
		c.userID = userID
	}
}

// serve answers the requests of one command in this session, running it
// again for those that arrived while the answers of the last run left.
func (s *session) serve(typ string, c *pending) {
	defer s.p.wg.Done()
	s.mu.Lock()
	r := c.r
	s.mu.Unlock()
	for {
		select {
		case <-r.done:
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		n := c.owed
		c.owed = 0
		s.mu.Unlock()
		for ; n > 0; n-- {
			if !s.answer(typ, r.err) {
				return
			}
		}
		s.mu.Lock()
		if c.next == 0 {
			*c = pending{}
			s.mu.Unlock()
			return
		}
		r = s.p.start(typ, c.userID)
		c.r, c.owed, c.next, c.userID = r, c.next, 0, ""
		s.mu.Unlock()
	}
}

// refuseLocked queues the refusal of an unknown type.
func (s *session) refuseLocked(typ string) {
	if len(s.unknown) >= maxUnknownPending {
		if s.p.droppedLog.Allow(s.p.o.Now()) {
			s.p.log.Warn("mender client: unknown message types arrive faster than their refusals leave; dropped",
				"type", logging.Clip(typ), logging.KeySessionID, logging.Clip(s.sid),
				"suppressed", s.p.droppedLog.TakeSuppressed())
		}
		return
	}
	s.unknown = append(s.unknown, typ)
	if s.unknownBusy {
		return
	}
	s.unknownBusy = true
	s.p.wg.Add(1)
	go func() {
		defer s.p.wg.Done()
		for {
			s.mu.Lock()
			if len(s.unknown) == 0 || s.ctx.Err() != nil {
				s.unknown, s.unknownBusy = nil, false
				s.mu.Unlock()
				return
			}
			typ := s.unknown[0]
			s.unknown = s.unknown[1:]
			s.mu.Unlock()
			if !s.answer(typ, errors.New(ErrTextUnknownType)) {
				s.mu.Lock()
				s.unknown, s.unknownBusy = nil, false
				s.mu.Unlock()
				return
			}
		}
	}()
}

// Close drops the session's pending answers; the runs go on for others.
func (s *session) Close() { s.cancel() }

// answer sends one answer; false once the session cannot take more.
func (s *session) answer(typ string, err error) bool {
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: typ, SessionID: s.sid,
		Properties: map[string]interface{}{wire.PropStatus: wire.StatusNormal}}}
	if err != nil {
		m.Header.Properties[wire.PropStatus] = wire.StatusError
		m.Body = []byte(err.Error())
	}
	if e := s.out.Send(s.ctx, m); e != nil {
		if s.ctx.Err() == nil {
			s.p.log.Debug("mender client: answer not sent", "type", typ, "error", e)
		}
		return false
	}
	return true
}

// start returns the run of cmd in progress, or starts one.
func (p *Protocol) start(cmd, userID string) *run {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.runs[cmd]; r != nil {
		return r
	}
	r := &run{done: make(chan struct{})}
	p.runs[cmd] = r
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		r.err = p.execute(cmd, userID)
		p.mu.Lock()
		delete(p.runs, cmd)
		p.mu.Unlock()
		close(r.done)
	}()
	return r
}

func (p *Protocol) binary() (string, error) {
	for _, b := range p.o.Binaries {
		if fi, err := os.Stat(b); err == nil && !fi.IsDir() {
			return b, nil
		}
	}
	//lint:ignore ST1005 upstream's exact text; people and scripts match it
	return "", fmt.Errorf("Cannot find Mender client binary, tried %v", p.o.Binaries)
}

// logRun logs a line about a run, within the rate limit: how often
// commands run is the server's choice.
func (p *Protocol) logRun(level slog.Level, msg string, args ...any) {
	if !p.runLog.Allow(p.o.Now()) {
		return
	}
	if n := p.runLog.TakeSuppressed(); n > 0 {
		args = append(args, "suppressed", n)
	}
	p.log.Log(context.Background(), level, msg, args...)
}

func (p *Protocol) execute(cmd, userID string) error {
	bin, err := p.binary()
	if err != nil {
		p.logRun(slog.LevelWarn, "mender client: "+err.Error(), "command", cmd)
		return err
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.o.Timeout)
	defer cancel()
	c := exec.Command(bin, cmd)
	c.Env = p.o.Env
	c.Dir = "/"
	// Its own process group, so a timeout ends whatever it started too.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	kill := func(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
	start := time.Now()
	p.logRun(slog.LevelInfo, "mender client: running", "command", cmd, "binary", bin, logging.KeyUserID, logging.Clip(userID))
	run := p.o.Exec
	if run == nil {
		run = execWait
	}
	err = run(ctx, c, kill)
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		err = fmt.Errorf("%s %s: timed out after %s", bin, cmd, p.o.Timeout)
	case p.ctx.Err() != nil:
		err = fmt.Errorf("%s %s: cancelled: the daemon is stopping", bin, cmd)
	}
	if err != nil {
		p.logRun(slog.LevelWarn, "mender client: command failed", "command", cmd, "error", err, "took", time.Since(start).Round(time.Millisecond).String())
		return err
	}
	p.logRun(slog.LevelInfo, "mender client: done", "command", cmd, "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// execWait runs c with os/exec's own wait, calling kill when ctx ends
// first.
func execWait(ctx context.Context, c *exec.Cmd, kill func(pid int)) error {
	if err := c.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			kill(c.Process.Pid)
		case <-done:
		}
	}()
	err := c.Wait()
	close(done)
	return err
}
