// Package menderclient is the Mender client commands protocol (proto 4,
// docs/protocol.md §7): the server asks the device to run `check-update` or
// `send-inventory` of the Mender client, and the device answers with the
// outcome.
//
// Unlike upstream the command never runs on the read loop, it has a
// timeout, and a request that arrives while the same command runs joins
// that run instead of starting another.
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

// Options configure the protocol.
type Options struct {
	Log *slog.Logger
	// Binaries are tried in order; the first that exists runs
	// (default /usr/bin/mender-update, /usr/bin/mender).
	Binaries []string
	// Timeout ends a run that takes longer (default 10 min).
	Timeout time.Duration
	// Exec runs a command as a child the daemon's reaper collects
	// (shell.Reaper.Exec; the reaper waits for every child). nil runs it
	// with os/exec's own wait, for a program without a reaper.
	Exec func(ctx context.Context, cmd *exec.Cmd, kill func(pid int)) error
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
}

// run is one execution of a command and the replies waiting for it.
type run struct {
	done chan struct{}
	err  error
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
		o.Timeout = 10 * time.Minute
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
}

// Handle starts (or joins) the command and answers when it ends; it never
// waits for it.
func (s *session) Handle(m *wire.ProtoMsg) {
	typ := m.Header.MsgType
	switch typ {
	case TypeCheckUpdate, TypeSendInventory:
	default:
		s.p.wg.Add(1)
		go func() {
			defer s.p.wg.Done()
			s.answer(typ, errors.New(ErrTextUnknownType))
		}()
		return
	}
	r := s.p.start(typ, m.Header.StringProp(wire.PropUserID))
	s.p.wg.Add(1)
	go func() {
		defer s.p.wg.Done()
		select {
		case <-r.done:
			s.answer(typ, r.err)
		case <-s.ctx.Done():
		}
	}()
}

// Close drops the session's pending answers; the runs go on for others.
func (s *session) Close() { s.cancel() }

func (s *session) answer(typ string, err error) {
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: typ, SessionID: s.sid,
		Properties: map[string]interface{}{wire.PropStatus: wire.StatusNormal}}}
	if err != nil {
		m.Header.Properties[wire.PropStatus] = wire.StatusError
		m.Body = []byte(err.Error())
	}
	if e := s.out.Send(s.ctx, m); e != nil && s.ctx.Err() == nil {
		s.p.log.Debug("mender client: answer not sent", "type", typ, "error", e)
	}
}

// start returns the run of cmd in progress, or starts one.
func (p *Protocol) start(cmd, userID string) *run {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.runs[cmd]; r != nil {
		p.log.Debug("mender client: joining the run in progress", "command", cmd, "user_id", userID)
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

func (p *Protocol) execute(cmd, userID string) error {
	bin, err := p.binary()
	if err != nil {
		p.log.Warn("mender client: "+err.Error(), "command", cmd)
		return err
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.o.Timeout)
	defer cancel()
	c := exec.Command(bin, cmd)
	// Its own process group, so a timeout ends whatever it started too.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	kill := func(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
	start := time.Now()
	p.log.Info("mender client: running", "command", cmd, "binary", bin, "user_id", userID)
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
		p.log.Warn("mender client: command failed", "command", cmd, "error", err, "took", time.Since(start).Round(time.Millisecond).String())
		return err
	}
	p.log.Info("mender client: done", "command", cmd, "took", time.Since(start).Round(time.Millisecond).String())
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
