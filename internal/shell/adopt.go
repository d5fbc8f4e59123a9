package shell

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrExitUnknown is the exit status of an adopted shell: it is not this
// daemon's child (its unit's, or a child reaped by the reaper as any
// orphan), so only its end is known, not how it ended.
var ErrExitUnknown = errors.New("exit status unknown: the shell was started by a previous run of the daemon")

// Adopt makes a Process of a shell this daemon did not start: a session
// restored from a previous run, handed over as its pty master and the
// shell's pid (the session leader). The caller has checked that the two
// belong together. Done is closed when the shell has exited, learnt from
// a pidfd in the runtime's poller (no thread waits), or on kernels
// without pidfds (before 5.3) from a poll of /proc every half second;
// ExitErr is then ErrExitUnknown. Stop tears the terminal session down as
// for a shell the daemon started. On error master is closed.
func (r *Reaper) Adopt(master *os.File, pid int) (*Process, error) {
	if pid <= 1 {
		master.Close()
		return nil, fmt.Errorf("adopt shell: bad pid %d", pid)
	}
	f, raw, err := pollable(master)
	if err != nil {
		return nil, fmt.Errorf("adopt shell %d: %w", pid, err)
	}
	p := &Process{pty: f, raw: raw, pid: pid, reaper: r, done: make(chan struct{}), stopped: make(chan struct{})}
	p.readFn, p.tryWrite = p.readPooled, p.writeNow
	stop, err := p.watchExit()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("adopt shell %d: %w", pid, err)
	}
	p.release = stop
	return p, nil
}

// errGone says the adopted shell had already exited.
var errGone = errors.New("the shell has exited")

// watchExit closes p.done once the shell exits; the returned func stops
// the watch without closing it (the shell is handed over again).
func (p *Process) watchExit() (func(), error) {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		return p.pollExit()
	}
	if errors.Is(err, unix.ESRCH) {
		return nil, errGone
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pidfd non-blocking: %w", err)
	}
	pf := os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(p.pid))
	raw, err := pf.SyscallConn()
	if err != nil {
		pf.Close()
		return nil, fmt.Errorf("pidfd: %w", err)
	}
	// The pid was checked before; that it has not exited since, with the
	// pidfd holding it, means it is still the process that was checked.
	if exited(fd) {
		pf.Close()
		return nil, errGone
	}
	go func() {
		// A pidfd is readable once its process has exited (zombie or
		// reaped). Read returns an error only when pf is closed by the
		// stop func: the shell lives on, done stays open.
		err := raw.Read(func(fd uintptr) bool { return exited(int(fd)) })
		if err == nil {
			p.err = ErrExitUnknown
			close(p.done)
		}
		pf.Close()
	}()
	return func() { _ = pf.SetReadDeadline(time.Unix(1, 0)) }, nil
}

// exited polls a pidfd without waiting.
func exited(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && pfd[0].Revents != 0
	}
}

// pollExit is watchExit for kernels without pidfd_open.
func (p *Process) pollExit() (func(), error) {
	if !alive(p.pid) {
		return nil, errGone
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if !alive(p.pid) {
					p.err = ErrExitUnknown
					close(p.done)
					return
				}
			}
		}
	}()
	return func() { close(stop) }, nil
}

// alive says pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	e, ok := parseStat(b)
	return ok && !e.zombie
}

// HandOver lets go of the shell without ending it, for the next run of
// the daemon: reads and writes in progress or to come fail with
// os.ErrDeadlineExceeded (the pump and the input writer end, the terminal
// keeps whatever the shell writes from now on), and an adopted shell's
// exit is no longer watched. It returns the pty master, which stays open
// and in this Process's hands: the caller duplicates it for the next run
// and then closes the Process. Stop must not be called afterwards.
func (p *Process) HandOver() *os.File {
	past := time.Unix(1, 0)
	_ = p.pty.SetDeadline(past)
	if p.release != nil {
		p.release()
	}
	return p.pty
}

// Master is the pty master as a syscall.Conn, for passing it on (to
// systemd's descriptor store) without File.Fd, which would put it into
// blocking mode.
func (p *Process) Master() syscall.Conn { return p.pty }

// Winsize reads the terminal size the pty holds now: a restored session's
// size is the pty's, whatever was recorded.
func (p *Process) Winsize() (cols, rows uint16, err error) {
	var ws *unix.Winsize
	cerr := p.raw.Control(func(fd uintptr) {
		ws, err = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ)
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	if err != nil {
		return 0, 0, fmt.Errorf("terminal size: %w", err)
	}
	return ws.Col, ws.Row, nil
}
