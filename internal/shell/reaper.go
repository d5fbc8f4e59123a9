package shell

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
)

// Reaper reaps every child of the daemon from one goroutine driven by
// SIGCHLD: its own shells and the orphans it adopts as a child subreaper.
// No thread blocks in a wait per shell, and no zombie waits for a periodic
// scan. It calls wait4(-1), so every child of the process must be started
// through it (Start); nothing else may wait for children.
type Reaper struct {
	mu    sync.Mutex // held across fork and registration, and every reap
	procs map[int]*Process

	orphans atomic.Int64

	evMu sync.Mutex
	ev   chan struct{} // closed and replaced after a round that reaped

	box  *Containment // nil: process groups
	lmu  sync.Mutex
	live map[*Process]struct{} // started shells not yet torn down
}

// NewReaper returns a reaper; Run must be running for children to be
// reaped.
func NewReaper() *Reaper {
	return &Reaper{procs: make(map[int]*Process), ev: make(chan struct{}), live: make(map[*Process]struct{})}
}

// Contain makes the shells Start starts from now on run in c (nil:
// process groups). Call it before the first Start.
func (r *Reaper) Contain(c *Containment) { r.box = c }

// Containment is what Contain set.
func (r *Reaper) Containment() *Containment { return r.box }

// DescribeLimit words a limit LimitHit reported, for the user and the log.
func (r *Reaper) DescribeLimit(limit string) string { return r.box.describeLimit(limit) }

func (r *Reaper) forget(p *Process) {
	r.lmu.Lock()
	delete(r.live, p)
	r.lmu.Unlock()
}

// Run reaps on every SIGCHLD until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	r.reap() // whatever exited before the handler was installed
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			r.reap()
		}
	}
}

// reap collects every exited child; signals coalesce, so it loops until
// none is left.
func (r *Reaper) reap() {
	var ended []*Process
	reaped := 0
	r.mu.Lock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			break
		}
		reaped++
		if p := r.procs[pid]; p != nil {
			delete(r.procs, pid)
			p.err = exitError(ws)
			ended = append(ended, p)
		} else {
			r.orphans.Add(1)
		}
	}
	r.mu.Unlock()
	for _, p := range ended {
		_ = p.cmd.Process.Release() // its pidfd; the pid is reaped
		close(p.done)
	}
	if reaped > 0 {
		r.evMu.Lock()
		close(r.ev)
		r.ev = make(chan struct{})
		r.evMu.Unlock()
	}
}

// Changed is closed after the next round that reaped a child.
func (r *Reaper) Changed() <-chan struct{} {
	r.evMu.Lock()
	defer r.evMu.Unlock()
	return r.ev
}

// Orphans counts the adopted children reaped so far.
func (r *Reaper) Orphans() int64 { return r.orphans.Load() }

// exitError words a wait status as os/exec does.
func exitError(ws syscall.WaitStatus) error {
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Errorf("signal: %s", ws.Signal())
	}
	return fmt.Errorf("wait status %#x", uint32(ws))
}

// Exec runs cmd, which must not have been started, as a child the reaper
// collects, and waits for it. Code in the daemon that runs a command must
// come here: the reaper's wait4(-1) would take the child from under
// exec.Cmd.Wait. When ctx ends first, kill is called with the child's pid
// and Exec still waits for the child to be reaped. Output that cmd copies
// through pipes is not supported (nobody would wait for the copies);
// give it files or nothing.
func (r *Reaper) Exec(ctx context.Context, cmd *exec.Cmd, kill func(pid int)) error {
	p := &Process{cmd: cmd, reaper: r, done: make(chan struct{}), stopped: make(chan struct{})}
	r.mu.Lock()
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		return err
	}
	p.pid = cmd.Process.Pid
	r.procs[p.pid] = p
	r.mu.Unlock()
	select {
	case <-p.done:
	case <-ctx.Done():
		kill(p.pid)
		<-p.done
	}
	return p.err
}
