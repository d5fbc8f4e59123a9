// Package shell runs a login shell on a pty as a given account and tears
// it down completely: not just the shell's pid but everything it started.
// Where the device allows, each shell is contained (contain.go): in a
// transient systemd unit of its own (unit.go) or a cgroup v2 leaf
// (cgroup.go), with per-session limits, and torn down by its cgroup; else
// by its terminal session.
package shell

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/rawio"
)

// KillWait is how long the teardown waits for SIGKILLed processes to go.
const KillWait = 5 * time.Second

// DefaultPath is PATH for shells; a login shell's profile may replace it.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Spec describes one shell.
type Spec struct {
	Command string   // absolute path; also argv[0]
	Args    []string // arguments after argv[0]
	Account *Account
	Lang    string // "" = no LANG
	Cols    uint16
	Rows    uint16
	// SessionID and UserID name the session's unit or cgroup and its
	// metrics; either may be empty.
	SessionID string
	UserID    string
}

// Process is a running shell with its pty master. Read and Write go to the
// pty; Done is closed once the shell has been reaped.
type Process struct {
	pty    *os.File // non-blocking, in the runtime poller
	raw    syscall.RawConn
	cmd    *exec.Cmd
	pid    int // kept: the reaper's Release clears cmd.Process.Pid
	reaper *Reaper
	done   chan struct{}
	err    error // exit status, valid after done

	scans atomic.Int64 // /proc scans by the teardown, for tests

	// Containment: at most one of unit and leaf is set (neither: the
	// process group). limit is what ended the session, valid once
	// Stopped is closed; cgroupDir is where its usage is read.
	short     string
	unit      *unitProc
	leaf      *leaf
	cgroupDir string
	limMu     sync.Mutex // the unit's watcher may still run after a timed-out stop
	limit     string
	forkFails uint64

	// The callbacks handed to the poller are made once (a closure per
	// call is an allocation or three per keystroke); their arguments and
	// results live here, under a mutex per direction.
	rmu      sync.Mutex
	rget     func() []byte
	rput     func([]byte)
	rbuf     []byte
	rn       int
	rerr     error
	readFn   func(uintptr) bool
	wmu      sync.Mutex
	wb       []byte
	wn       int
	werr     error
	tryWrite func(uintptr) bool

	stopOnce sync.Once
	stopped  chan struct{} // closed when Stop has finished its teardown
	release  func()        // an adopted shell's: stops watching its exit (adopt.go)
}

// Start spawns the shell in the reaper's containment. The window size is
// set before the shell runs, so it never sees a 0x0 terminal.
func (r *Reaper) Start(s Spec) (*Process, error) {
	if s.Account == nil {
		return nil, errors.New("start shell: no account")
	}
	short := shortID(s.SessionID)
	var (
		p   *Process
		err error
	)
	switch r.box.Mode() {
	case ModeUnit:
		p, err = r.startUnit(s, short)
	case ModeCgroup:
		var l *leaf
		if l, err = r.box.cg.newLeaf(short); err != nil {
			return nil, fmt.Errorf("start %s: %w", s.Command, err)
		}
		var fd int
		if fd, err = l.open(); err == nil {
			p, err = r.startFork(s, fd, l)
			syscall.Close(fd)
		}
		if err != nil {
			_ = l.remove()
		}
	default:
		p, err = r.startFork(s, -1, nil)
	}
	if err != nil {
		return nil, err
	}
	p.short = short
	r.lmu.Lock()
	r.live[p] = struct{}{}
	r.lmu.Unlock()
	return p, nil
}

// startFork forks the shell as the daemon's child, into the cgroup of
// cgroupFD unless it is -1 (clone3 with CLONE_INTO_CGROUP: the shell
// never runs outside it, not even for an instant).
func (r *Reaper) startFork(s Spec, cgroupFD int, l *leaf) (*Process, error) {
	cmd := &exec.Cmd{
		Path: s.Command,
		Args: append([]string{s.Command}, s.Args...),
		Dir:  s.Account.workDir(),
		Env:  environment(s),
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:     true,
			Setctty:    true,
			Credential: s.Account.credential(),
		},
	}
	if cgroupFD >= 0 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cgroupFD
	}
	ws := &pty.Winsize{Cols: s.Cols, Rows: s.Rows}
	p := &Process{cmd: cmd, reaper: r, done: make(chan struct{}), stopped: make(chan struct{}), leaf: l}
	if l != nil {
		p.cgroupDir = l.dir
	}
	// Registered before the reaper can see the child exit.
	r.mu.Lock()
	f, err := pty.StartWithAttrs(cmd, ws, cmd.SysProcAttr)
	if err != nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("start %s as %s: %w", s.Command, s.Account.Name, err)
	}
	p.pid = cmd.Process.Pid
	r.procs[p.pid] = p
	r.mu.Unlock()
	master, raw, err := pollable(f)
	if err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("start %s: %w", s.Command, err)
	}
	p.pty, p.raw = master, raw
	p.readFn, p.tryWrite = p.readPooled, p.writeNow
	return p, nil
}

// startUnit starts the shell in a transient systemd unit of its own, on a
// pty whose master the daemon keeps.
func (r *Reaper) startUnit(s Spec, short string) (*Process, error) {
	f, tty, err := openPTY()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Command, err)
	}
	master, raw, err := pollable(f)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Command, err)
	}
	p := &Process{reaper: r, done: make(chan struct{}), stopped: make(chan struct{}), pty: master, raw: raw}
	p.readFn, p.tryWrite = p.readPooled, p.writeNow
	if err := p.Resize(s.Cols, s.Rows); err != nil {
		master.Close()
		return nil, err
	}
	if err := r.box.units.startUnit(s, short, tty, p); err != nil {
		master.Close()
		return nil, fmt.Errorf("start %s as %s: %w", s.Command, s.Account.Name, err)
	}
	return p, nil
}

// shortID is the first 8 letters and digits of a session id: unit,
// cgroup and metrics label; unique enough, and collisions get a suffix.
func shortID(sid string) string {
	var b []byte
	for i := 0; i < len(sid) && len(b) < 8; i++ {
		c := sid[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b = append(b, c)
		case c >= 'A' && c <= 'Z':
			b = append(b, c+'a'-'A')
		}
	}
	if len(b) == 0 {
		return "anon"
	}
	return string(b)
}

// pollable turns the pty master creack/pty returns (in blocking mode: it
// calls File.Fd) into a non-blocking file in the runtime's poller: reads
// then park a goroutine instead of an OS thread, and Close interrupts them.
func pollable(f *os.File) (*os.File, syscall.RawConn, error) {
	defer f.Close()
	// One step: between a dup and a separate close-on-exec, a shell
	// spawned concurrently would inherit this session's master.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("dup pty master: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, nil, fmt.Errorf("pty master non-blocking: %w", err)
	}
	nf := os.NewFile(uintptr(fd), "/dev/ptmx")
	raw, err := nf.SyscallConn()
	if err != nil {
		nf.Close()
		return nil, nil, fmt.Errorf("pty master: %w", err)
	}
	return nf, raw, nil
}

func environment(s Spec) []string {
	env := []string{
		"HOME=" + s.Account.workDir(),
		"TERM=xterm-256color",
		"USER=" + s.Account.Name,
		"LOGNAME=" + s.Account.Name,
		"SHELL=" + s.Command,
		"PATH=" + DefaultPath,
	}
	if s.Account.Home != "" {
		env[0] = "HOME=" + s.Account.Home
	}
	if s.Lang != "" {
		env = append(env, "LANG="+s.Lang)
	}
	return env
}

// Pid is the shell's process id, which is also its terminal session id.
func (p *Process) Pid() int { return p.pid }

// Read reads shell output from the pty master. After the shell and every
// process holding the terminal have gone it returns an error (EIO).
func (p *Process) Read(b []byte) (int, error) { return p.pty.Read(b) }

// TryWrite writes what the pty takes right now without waiting; the caller
// queues the rest. It lets the read path deliver a keystroke without a
// goroutine hand-off.
func (p *Process) TryWrite(b []byte) (int, error) {
	p.wmu.Lock()
	p.wb, p.wn, p.werr = b, 0, nil
	err := p.raw.Write(p.tryWrite)
	n, werr := p.wn, p.werr
	p.wb = nil
	p.wmu.Unlock()
	if werr == syscall.EAGAIN {
		werr = nil
	}
	if err == nil {
		err = werr
	}
	return n, err
}

func (p *Process) writeNow(fd uintptr) bool {
	p.wn, p.werr = rawio.Write(fd, p.wb)
	return true // never wait
}

// Write writes input to the pty master.
func (p *Process) Write(b []byte) (int, error) { return p.pty.Write(b) }

// Resize sets the terminal size; zero values are ignored as upstream does.
func (p *Process) Resize(cols, rows uint16) error {
	if cols == 0 || rows == 0 {
		return nil
	}
	ws := &pty.Winsize{Cols: cols, Rows: rows}
	var errno syscall.Errno
	// Not pty.Setsize: it uses File.Fd, which would put the master back
	// into blocking mode.
	err := p.raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(ws)))
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return fmt.Errorf("resize pty to %dx%d: %w", cols, rows, err)
	}
	return nil
}

// busyRead is the read size that says the shell is writing faster than
// the terminal is read: the line discipline had more than this waiting.
const busyRead = 1024

// ReadPooled waits until the shell has output and only then takes a buffer
// from get to read it into, so an idle session holds no read buffer. It
// returns the buffer and the bytes read; on error the buffer may be nil.
func (p *Process) ReadPooled(get func() []byte, put func([]byte)) (buf []byte, n int, err error) {
	p.rmu.Lock()
	p.rget, p.rput, p.rbuf, p.rn, p.rerr = get, put, nil, 0, nil
	err = p.raw.Read(p.readFn)
	buf, n, rerr := p.rbuf, p.rn, p.rerr
	p.rget, p.rput, p.rbuf = nil, nil, nil
	p.rmu.Unlock()
	if err == nil {
		err = rerr
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	return buf, n, err
}

func (p *Process) readPooled(fd uintptr) bool {
	buf := p.rget()
	n, rerr := rawio.Read(fd, buf)
	if rerr == syscall.EAGAIN {
		p.rput(buf)
		p.rbuf, p.rn, p.rerr = nil, 0, nil
		return false // wait for readiness
	}
	// The line discipline hands out at most 4 KiB per read; take what
	// else is already there, without waiting for more, so a busy shell
	// fills big frames while an echo goes out at once. A short read
	// means the terminal was drained: asking again would only earn an
	// EAGAIN (a syscall per keystroke).
	for m := n; rerr == nil && m >= busyRead && n < len(buf); n += m {
		var e error
		if m, e = rawio.Read(fd, buf[n:]); m <= 0 || e != nil {
			break // EAGAIN, EIO: the next call reports it
		}
	}
	p.rbuf, p.rn, p.rerr = buf, n, rerr
	return true
}

// Done is closed when the shell process has been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr is the shell's exit status; valid once Done is closed.
func (p *Process) ExitErr() error {
	<-p.done
	return p.err
}

// Stop tears the whole terminal session down: SIGHUP, then SIGTERM after
// grace, then SIGKILL after another grace, to every process of the session
// (background jobs in their own process groups included), and closes the
// pty master. It returns at once; Stopped is closed when the shell has been
// reaped and no process of the session is left. Calling it again is a no-op.
func (p *Process) Stop(grace time.Duration) {
	p.stopOnce.Do(func() { go p.teardown(grace, true) })
}

// Finish is Stop for a shell that exited by itself: the rest of its session
// is torn down the same way, but the pty master stays open so that the
// output still in the terminal can be read to the end (the reader gets EIO
// once no process holds the terminal). The caller closes it with Close.
func (p *Process) Finish(grace time.Duration) {
	p.stopOnce.Do(func() { go p.teardown(grace, false) })
}

// Stopped is closed when a Stop has completed.
func (p *Process) Stopped() <-chan struct{} { return p.stopped }

func (p *Process) teardown(grace time.Duration, closeMaster bool) {
	defer close(p.stopped)
	defer p.reaper.forget(p)
	switch {
	case p.unit != nil:
		p.teardownUnit(closeMaster)
	case p.leaf != nil:
		p.teardownLeaf(grace, closeMaster)
	default:
		p.teardownSession(grace, closeMaster)
	}
}

// teardownSession signals the members of the shell's terminal session.
func (p *Process) teardownSession(grace time.Duration, closeMaster bool) {
	sid := p.Pid()
	gone := func() bool { return len(SessionMembers(sid)) == 0 }
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGKILL} {
		signalSession(sid, sig)
		if sig == syscall.SIGHUP && closeMaster {
			// The hangup the kernel sends when the master closes reaches
			// the foreground job even if it was not found by the scan.
			_ = p.pty.Close()
		}
		wait := grace
		if sig == syscall.SIGKILL {
			// Killed processes still take a moment to exit on a busy
			// machine; only uninterruptible sleepers take longer.
			wait = max(grace, KillWait)
		}
		if p.waitGone(gone, wait) {
			return
		}
	}
	// Whatever survives SIGKILL is stuck in the kernel; the shell itself
	// cannot block on anything but its own exit now.
	<-p.done
}

// teardownLeaf ends every process of the session's cgroup, whatever it
// did to leave the terminal session, then removes the cgroup.
func (p *Process) teardownLeaf(grace time.Duration, closeMaster bool) {
	l := p.leaf
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGKILL} {
		if sig == syscall.SIGKILL {
			_ = l.killAll()
		} else {
			l.signal(sig)
		}
		if sig == syscall.SIGHUP && closeMaster {
			_ = p.pty.Close()
		}
		wait := grace
		if sig == syscall.SIGKILL {
			wait = max(grace, KillWait)
		}
		if p.waitGone(l.empty, wait) {
			break
		}
	}
	<-p.done
	oom, forks := l.limitHit()
	p.limMu.Lock()
	if oom > 0 {
		p.limit = LimitMemory
	}
	p.forkFails = forks
	p.limMu.Unlock()
	_ = l.remove()
}

// teardownUnit stops the unit: systemd ends every process of its cgroup
// (SIGTERM and SIGHUP, SIGKILL after its stop timeout).
func (p *Process) teardownUnit(closeMaster bool) {
	if closeMaster {
		_ = p.pty.Close()
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.unit.stop()
	t := time.NewTimer(p.unit.u.stopTimeout + KillWait + time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	_ = p.unit.kill()
	t.Reset(KillWait)
	select {
	case <-p.done:
	case <-t.C:
	}
}

// waitGone waits up to d for the shell to be reaped and gone to say that
// nothing of the session is left. It asks only when the reaper has reaped
// something (the session's processes are adopted by the daemon as they
// are orphaned) or, as a backstop for members still parented elsewhere,
// at a slowing pace.
func (p *Process) waitGone(gone func() bool, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	select {
	case <-p.done:
	case <-deadline.C:
		return false
	}
	backoff := 10 * time.Millisecond
	for {
		changed := p.reaper.Changed()
		p.scans.Add(1)
		if gone() {
			return true
		}
		t := time.NewTimer(backoff)
		select {
		case <-changed:
		case <-t.C:
			backoff = min(2*backoff, 500*time.Millisecond)
		case <-deadline.C:
			t.Stop()
			return false
		}
		t.Stop()
	}
}

// LimitHit says which of the session's limits ended it ("" none,
// LimitMemory); valid once Stopped is closed.
func (p *Process) LimitHit() string {
	p.limMu.Lock()
	defer p.limMu.Unlock()
	return p.limit
}

// Containment words where the shell runs, for logs: its unit or cgroup.
func (p *Process) Containment() string {
	switch {
	case p.unit != nil:
		return p.unit.name
	case p.leaf != nil:
		return p.leaf.dir
	}
	return "process group"
}

// Usage is one session's resource use, read from its cgroup.
type Usage struct {
	Session     string // the short session id (8 characters)
	MemoryBytes uint64
	CPU         time.Duration
}

// Usage reads the memory and CPU time of every live contained session,
// for metrics at scrape time; sessions without a cgroup are left out.
func (r *Reaper) Usage() []Usage {
	type entry struct{ short, dir string }
	r.lmu.Lock()
	list := make([]entry, 0, len(r.live))
	for p := range r.live {
		if p.cgroupDir != "" {
			list = append(list, entry{p.short, p.cgroupDir})
		}
	}
	r.lmu.Unlock()
	out := make([]Usage, 0, len(list))
	for _, e := range list {
		if mem, cpu, ok := cgroupUsage(e.dir); ok {
			out = append(out, Usage{Session: e.short, MemoryBytes: mem, CPU: cpu})
		}
	}
	return out
}

// Close releases the pty master. Use Stop to end the shell; Close alone is
// for a shell that has already exited.
func (p *Process) Close() error {
	err := p.pty.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
