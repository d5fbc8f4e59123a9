package shell

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrExitUnknown is the exit status of an adopted shell: it is not this
// daemon's child (its unit's, or a child reaped by the reaper as any
// orphan), so only its end is known, not how it ended.
var ErrExitUnknown = errors.New("exit status unknown: the shell was started by a previous run of the daemon")

// Held is where a shell from a previous run is contained, as that run
// recorded it: its transient unit, or its cgroup v2 leaf (both empty: its
// terminal session and process group only).
type Held struct {
	Unit   string // tether-session-*.service
	Cgroup string // the leaf's directory, beneath the sessions' subtree
}

// Adopt makes a Process of a shell this daemon did not start: a session
// restored from a previous run, handed over as its pty master, the
// shell's pid (the session leader) and where it is held. The caller has
// checked that master and pid belong together; Adopt checks that the unit
// or leaf h names is one of this daemon's kind and holds that very pid,
// and refuses the shell otherwise (a record never puts a foreign process
// under a session). The Process keeps its containment: Stop stops the
// unit or kills the whole leaf, and the limit that ended it is read as
// for a fresh one. Done is closed when the shell has exited: for a unit
// when systemd says it ended, else from a pidfd in the runtime's poller
// (no thread waits), or on kernels without pidfds (before 5.3) from a
// poll of /proc every half second. ExitErr is then ErrExitUnknown unless
// systemd knows better. On error master is closed.
func (r *Reaper) Adopt(master *os.File, pid int, h Held) (*Process, error) {
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
	switch {
	case h.Unit != "" && h.Cgroup != "":
		err = errors.New("the record names both a unit and a cgroup")
	case h.Unit != "":
		if r.box.Mode() != ModeUnit {
			err = fmt.Errorf("its unit %s cannot be taken back: this run does not use systemd units (%s)", h.Unit, r.box.Mode())
			break
		}
		err = r.box.units.adopt(p, h.Unit)
	case h.Cgroup != "":
		if r.box.Mode() != ModeCgroup {
			err = fmt.Errorf("its cgroup %s cannot be taken back: this run does not use cgroup leaves (%s)", h.Cgroup, r.box.Mode())
			break
		}
		var l *leaf
		if l, err = r.box.cg.adoptLeaf(h.Cgroup, pid); err == nil {
			p.leaf, p.cgroupDir, p.short = l, l.dir, strings.TrimPrefix(filepath.Base(l.dir), "session-")
		}
	}
	if err == nil && p.unit == nil {
		// A unit's end is systemd's to tell (adopt watches it).
		p.release, err = p.watchExit()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("adopt shell %d: %w", pid, err)
	}
	r.lmu.Lock()
	r.live[p] = struct{}{}
	r.lmu.Unlock()
	return p, nil
}

// UnitName is the shell's transient unit ("" if it has none).
func (p *Process) UnitName() string {
	if p.unit == nil {
		return ""
	}
	return p.unit.name
}

// CgroupLeaf is the directory of the shell's cgroup v2 leaf ("" if it has
// none).
func (p *Process) CgroupLeaf() string {
	if p.leaf == nil {
		return ""
	}
	return p.leaf.dir
}

// Held is where the shell is contained, for the next run (Adopt).
func (p *Process) Held() Held { return Held{Unit: p.UnitName(), Cgroup: p.CgroupLeaf()} }

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
	p.reaper.forget(p) // the next run counts its usage
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
