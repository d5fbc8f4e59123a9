package shell

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// handOver starts a shell, hands it over as the daemon does before an
// upgrade (a duplicate of the master survives, the Process is closed)
// and returns that duplicate and the shell's pid.
func handOver(t *testing.T, script string) (*os.File, int) {
	t.Helper()
	p, err := newReaper(t).Start(Spec{Command: "/bin/sh", Args: []string{"-c", script}, Account: testAccount(t), Cols: 90, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	r := startReader(t, p)
	r.expect("ready")
	pid := p.Pid()
	m := p.HandOver()
	// The reader parked in a read ends: nothing reads the terminal now.
	select {
	case _, ok := <-r.out:
		for ok {
			_, ok = <-r.out
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read in progress was not interrupted by HandOver")
	}
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	return os.NewFile(uintptr(fd), "master"), pid
}

// An adopted shell keeps its terminal: what it wrote while nobody read is
// there, input reaches it, the size is the pty's, and its exit closes
// Done with the status said to be unknown.
func TestAdoptHandedOverShell(t *testing.T) {
	m, pid := handOver(t, `echo ready; read x; echo "got $x from $$"; read y; exit 7`)
	p, err := newReaper(t).Adopt(m, pid, Held{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Pid() != pid {
		t.Fatalf("pid %d, want %d", p.Pid(), pid)
	}
	if c, r, err := p.Winsize(); err != nil || c != 90 || r != 30 {
		t.Fatalf("winsize %dx%d %v, want 90x30", c, r, err)
	}
	rd := startReader(t, p)
	fmt.Fprintf(p, "hello\n")
	rd.expect("got hello from " + strconv.Itoa(pid))
	select {
	case <-p.Done():
		t.Fatal("done before the shell exited")
	default:
	}
	fmt.Fprintf(p, "bye\n")
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the adopted shell's exit was not noticed")
	}
	if err := p.ExitErr(); !errors.Is(err, ErrExitUnknown) {
		t.Fatalf("exit err %v, want ErrExitUnknown", err)
	}
	p.Finish(50 * time.Millisecond)
	<-p.Stopped()
}

// Stop of an adopted shell ends its whole terminal session, as for a
// shell the daemon started.
func TestAdoptedStopEndsSession(t *testing.T) {
	m, pid := handOver(t, `(trap '' HUP TERM; exec sleep 303) & echo ready; exec sleep 304`)
	eventually(t, "background job", func() bool { return len(SessionMembers(pid)) >= 2 })
	p, err := newReaper(t).Adopt(m, pid, Held{})
	if err != nil {
		t.Fatal(err)
	}
	p.Stop(50 * time.Millisecond)
	select {
	case <-p.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatalf("stop did not finish; members %v", SessionMembers(pid))
	}
	if left := SessionMembers(pid); len(left) != 0 {
		t.Fatalf("left in the session: %v", left)
	}
}

// A shell that is gone, or a pid that is no shell's, is refused, and the
// master closed.
func TestAdoptRefusesDeadPid(t *testing.T) {
	m, pid := handOver(t, `echo ready; exit 0`)
	eventually(t, "shell gone", func() bool { return !alive(pid) })
	_, err := newReaper(t).Adopt(m, pid, Held{})
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("adopting a dead shell: err %v", err)
	}
	if _, err := unix.FcntlInt(m.Fd(), unix.F_GETFD, 0); err == nil {
		t.Fatal("master left open after a refused adoption")
	}
}

// HandOver of an adopted shell stops the exit watch without closing
// Done: the shell lives on for the next run.
func TestAdoptedHandOverAgain(t *testing.T) {
	m, pid := handOver(t, `echo ready; exec sleep 305`)
	r := newReaper(t)
	p, err := r.Adopt(m, pid, Held{})
	if err != nil {
		t.Fatal(err)
	}
	p.HandOver()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-p.Done():
		t.Fatal("done closed by a hand-over")
	default:
	}
	fd, err := unix.FcntlInt(p.pty.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	q, err := r.Adopt(os.NewFile(uintptr(fd), "master"), pid, Held{})
	if err != nil {
		t.Fatal(err)
	}
	q.Stop(50 * time.Millisecond)
	<-q.Stopped()
}
