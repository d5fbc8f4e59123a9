package terminal

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/shell"
	"github.com/tether-agent/tether/internal/utmp"
)

// Keeper keeps what the next run of the daemon needs to take a session
// back after a restart or an upgrade (internal/handover): a record of the
// session and its pty master in systemd's descriptor store.
type Keeper interface {
	// Keep records a session whose shell runs, under k.Key or, when it
	// is "", a name it chooses; it returns that name ("" = not kept).
	Keep(k KeptSession) string
	// Forget drops what Keep kept, once the session has ended.
	Forget(key string)
}

// KeptSession is what Keep records of a session.
type KeptSession struct {
	Key       string
	SessionID string
	UserID    string
	Pid       int
	Started   time.Time
	Cols      uint16
	Rows      uint16
	Master    syscall.Conn
	// Held is the shell's unit or cgroup leaf: the next run stops it
	// whole, as this one would.
	Held shell.Held
}

// Kept is what a session handed over leaves for the next run: the caller
// passes Master on (it is the Process's own; duplicate it) and then calls
// Close.
type Kept struct {
	Key        string
	Pid        int
	Master     *os.File
	Ring       []byte // the replay buffer: output read, perhaps not delivered
	Cols, Rows uint16
	Held       shell.Held // the shell's unit or cgroup leaf
	proc       *shell.Process
}

// Close releases this run's hold on the session's pty.
func (k *Kept) Close() { _ = k.proc.Close() }

// RestoredShell is a shell from a previous run of the daemon to take back.
type RestoredShell struct {
	proto.Restored
	Key    string
	Pid    int
	Master *os.File   // consumed by Restore
	Ring   []byte     // output the previous run had read
	Held   shell.Held // its unit or cgroup leaf, as recorded
}

// Restore takes a shell from a previous run back as a session of tb,
// detached until its user opens a terminal; what the shell wrote while no
// daemon read its terminal is in the pty and goes to the replay buffer
// behind rs.Ring. The caller has matched the master with the shell
// (internal/handover). On error the master is closed and the shell, if
// it was adopted, ended.
func (t *Protocol) Restore(tb proto.Restorer, rs RestoredShell) error {
	proc, err := t.opts.Reaper.Adopt(rs.Master, rs.Pid, rs.Held)
	if err != nil {
		return err
	}
	cols, rows, err := proc.Winsize()
	if err != nil || cols == 0 || rows == 0 {
		cols, rows = t.opts.DefaultCols, t.opts.DefaultRows
	}
	var s *session
	open := func(l proto.Lease) proto.AdmittedSession {
		s = t.newSession(tb, l, rs.SessionID, rs.UserID, cols, rows)
		s.created, s.key, s.proc = rs.Created, rs.Key, proc
		s.ring.write(rs.Ring)
		return s
	}
	if err := tb.Restore(rs.Restored, open); err != nil {
		proc.Stop(t.opts.StopGrace)
		go func() { <-proc.Stopped(); _ = proc.Close() }()
		if t.opts.Keeper != nil {
			t.opts.Keeper.Forget(rs.Key)
		}
		return fmt.Errorf("restore session %s: %w", rs.SessionID, err)
	}
	go s.runRestored(proc, cols, rows)
	return nil
}

// runRestored is run for a restored shell.
func (s *session) runRestored(proc *shell.Process, cols, rows uint16) {
	t := s.t
	defer close(s.ended)
	defer s.lease.Done()
	defer s.q.Close()
	defer s.cancel()
	t.log.Info("session opened from the previous run", "event", "session_open", "session_id", s.id(), "user_id", s.userID,
		"proto", "shell", "pid", proc.Pid(), "cols", cols, "rows", rows, "restored", true)
	// Re-recorded as this run's: a crash of this run must not find the
	// clocks of the hand-over that brought it here.
	s.keep(proc, cols, rows)
	t.opts.Recorder.SessionOpened("shell")
	t.opts.Changed()
	// The previous run wrote the login; this run writes the logout.
	var login *utmp.Entry
	if r := t.opts.LoginRecords; r != nil {
		if tty := proc.PtyName(); tty != "" {
			login = r.Resume(utmp.Login{Line: tty, User: t.opts.Account.Name, Host: "tether:" + s.userID, PID: proc.Pid()})
		}
	}
	s.serve(proc, login)
}

// keep records the session for the next run, if a Keeper keeps them.
func (s *session) keep(proc *shell.Process, cols, rows uint16) {
	if k := s.t.opts.Keeper; k != nil {
		s.key = k.Keep(KeptSession{Key: s.key, SessionID: s.id(), UserID: s.userID, Pid: proc.Pid(), Started: s.created,
			Cols: cols, Rows: rows, Master: proc.Master(), Held: proc.Held()})
	}
}

// forget drops the session's record once it has ended.
func (s *session) forget() {
	if k := s.t.opts.Keeper; k != nil && s.key != "" {
		k.Forget(s.key)
	}
}

// HandOver ends the session's work without ending its shell, for the next
// run of the daemon (proto.HandOverer): the pump and the input stop, the
// terminal keeps what the shell writes from now on. It returns a *Kept, or
// nil when the session is not kept or ended meanwhile.
func (s *session) HandOver() any {
	if s.t.opts.Keeper == nil {
		return nil
	}
	reply := make(chan *Kept, 1)
	select {
	case s.handCh <- reply:
	default:
		return nil // asked before
	}
	select {
	case k := <-reply:
		return k
	case <-s.ended:
		// serve ends right after it replies: when both are ready, select
		// picks either, and the reply must win (else the shell would be
		// let go without a record, and the next run drop it).
		select {
		case k := <-reply:
			return k
		default:
			return nil
		}
	}
}

// handOver is serve's end for a hand-over.
func (s *session) handOver(proc *shell.Process, pumpDone <-chan struct{}, reply chan<- *Kept) {
	master := proc.HandOver() // the pump's and the writer's I/O fail from now on
	s.omu.Lock()
	s.sendCancel() // a pump waiting for queue room: its read is in the ring
	s.omu.Unlock()
	<-pumpDone
	s.in.End()
	s.omu.Lock()
	ring := s.ring.all()
	s.omu.Unlock()
	s.mu.Lock()
	cols, rows := s.cols, s.rows
	s.mu.Unlock()
	s.t.log.Info("session handed over to the next run", "event", "session_handover", "session_id", s.id(),
		"user_id", s.userID, "pid", proc.Pid())
	s.t.opts.Recorder.SessionClosed("shell", proto.ReasonShutdown, time.Since(s.created))
	reply <- &Kept{Key: s.key, Pid: proc.Pid(), Master: master, Ring: ring, Cols: cols, Rows: rows, Held: proc.Held(), proc: proc}
}
