package shell

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/leakcheck"
)

// TestMain fails the run if goroutines started by the tests outlive them.
func TestMain(m *testing.M) { leakcheck.Main(m) }

// testAccount is nobody when the test runs as root (CI), so the identity
// switch is exercised; otherwise the current user.
func testAccount(t *testing.T) *Account {
	t.Helper()
	name := "nobody"
	if os.Geteuid() != 0 {
		name = os.Getenv("USER")
	}
	a, err := LookupAccount(name)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type reader struct {
	t   *testing.T
	out chan []byte
	buf bytes.Buffer
}

func startReader(t *testing.T, p *Process) *reader {
	r := &reader{t: t, out: make(chan []byte, 64)}
	go func() {
		defer close(r.out)
		for {
			b := make([]byte, 32<<10)
			n, err := p.Read(b)
			if n > 0 {
				r.out <- b[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// expect reads until the accumulated output contains s.
func (r *reader) expect(s string) string {
	r.t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(r.buf.String(), s) {
		select {
		case b, ok := <-r.out:
			if !ok {
				r.t.Fatalf("pty closed before %q; got %q", s, r.buf.String())
			}
			r.buf.Write(b)
		case <-timeout:
			r.t.Fatalf("timeout waiting for %q; got %q", s, r.buf.String())
		}
	}
	// Keep what came after the match: it may already hold the start of
	// the next expected output.
	all := r.buf.String()
	end := strings.Index(all, s) + len(s)
	r.buf.Reset()
	r.buf.WriteString(all[end:])
	return all[:end]
}

func start(t *testing.T, cols, rows uint16) (*Process, *reader) {
	t.Helper()
	p, err := newReaper(t).Start(Spec{Command: "/bin/sh", Args: []string{"-i"}, Account: testAccount(t), Lang: "C.UTF-8", Cols: cols, Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(100 * time.Millisecond)
		<-p.Stopped()
	})
	return p, startReader(t, p)
}

func TestShellIdentityEnvironmentAndSize(t *testing.T) {
	acct := testAccount(t)
	p, r := start(t, 132, 43)
	fmt.Fprintf(p, "stty size; echo M1; id -u; id -g; id -G; echo M2; env | sort; echo M$((2+1))\n")
	if out := r.expect("M1\r\n"); !strings.Contains(out, "43 132") {
		t.Fatalf("initial size not applied before start: %q", out)
	}
	ids := strings.Fields(strings.ReplaceAll(r.expect("M2\r\n"), "M2", ""))
	want := []string{fmt.Sprint(acct.UID), fmt.Sprint(acct.GID)}
	if len(ids) < 3 || ids[0] != want[0] || ids[1] != want[1] {
		t.Fatalf("ids %q, want uid/gid %v", ids, want)
	}
	if os.Geteuid() == 0 {
		var groups []string
		for _, g := range acct.Groups {
			groups = append(groups, fmt.Sprint(g))
		}
		if got := strings.Join(ids[2:], " "); got != strings.Join(groups, " ") {
			t.Fatalf("supplementary groups %q, want %q", got, groups)
		}
	}
	env := r.expect("M3\r\n")
	for _, kv := range []string{"TERM=xterm-256color", "USER=" + acct.Name, "LOGNAME=" + acct.Name, "SHELL=/bin/sh", "LANG=C.UTF-8", "HOME=" + acct.Home, "PATH="} {
		if !strings.Contains(env, kv) {
			t.Errorf("environment lacks %s:\n%s", kv, env)
		}
	}
	if err := p.Resize(200, 50); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(p, "stty size; echo M$((2+2))\n")
	if out := r.expect("M4\r\n"); !strings.Contains(out, "50 200") {
		t.Fatalf("resize not reflected: %q", out)
	}
}

func TestStopEndsWholeSession(t *testing.T) {
	p, r := start(t, 80, 24)
	// A background job in its own process group that ignores HUP and TERM
	// survives anything but a session-wide SIGKILL.
	fmt.Fprintf(p, "(trap '' HUP TERM; exec sleep 301) & echo started\n")
	r.expect("started")
	eventually(t, "background job started", func() bool { return len(SessionMembers(p.Pid())) >= 2 })
	begin := time.Now()
	p.Stop(50 * time.Millisecond)
	select {
	case <-p.Stopped():
	case <-time.After(5 * time.Second):
		t.Fatalf("stop did not finish; session members %v", SessionMembers(p.Pid()))
	}
	if left := SessionMembers(p.Pid()); len(left) != 0 {
		t.Fatalf("processes left in the session: %v", left)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("shell not reaped")
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("stop took %v", d)
	}
}

func TestShellExitIsReaped(t *testing.T) {
	p, r := start(t, 80, 24)
	fmt.Fprintf(p, "exit 3\n")
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("shell exit not noticed")
	}
	if err := p.ExitErr(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("exit err %v", err)
	}
	for range r.out {
	} // the reader ends with an error once the slave side is gone
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want procEntry
		ok   bool
	}{
		{"42 (sh) S 1 42 42 34816 42 4194560", procEntry{pid: 42, ppid: 1, session: 42}, true},
		{"7 (a b) c)) Z 3 7 9 0", procEntry{pid: 7, ppid: 3, session: 9, zombie: true}, true},
		{"garbage", procEntry{}, false},
		{"1 (x) S", procEntry{}, false},
	}
	for _, tt := range tests {
		got, ok := parseStat([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseStat(%q) = %+v, %v", tt.in, got, ok)
		}
	}
}

func TestLookupAccountErrors(t *testing.T) {
	if _, err := LookupAccount("no-such-user-tether"); err == nil {
		t.Fatal("bogus user resolved")
	}
	r := newReaper(t)
	if _, err := r.Start(Spec{Command: "/bin/sh"}); err == nil {
		t.Fatal("start without account succeeded")
	}
	if _, err := r.Start(Spec{Command: "/nonexistent/sh", Account: testAccount(t), Cols: 80, Rows: 24}); err == nil {
		t.Fatal("start of a missing binary succeeded")
	}
}

// newReaper runs a reaper for one test; tests do not run in parallel, so
// only one reaper waits for children at a time.
func newReaper(t *testing.T) *Reaper {
	r := NewReaper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// A job that ignores HUP and TERM keeps the teardown waiting for two
// graces; it must not rescan /proc every few milliseconds meanwhile
// (16 sessions stopping at once ran 16 such scanners).
func TestTeardownDoesNotBusyPoll(t *testing.T) {
	p, r := start(t, 80, 24)
	fmt.Fprintf(p, "(trap '' HUP TERM; exec sleep 302) & echo started\n")
	r.expect("started")
	eventually(t, "background job started", func() bool { return len(SessionMembers(p.Pid())) >= 2 })
	const grace = 500 * time.Millisecond
	p.Stop(grace)
	select {
	case <-p.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not finish")
	}
	// Over two graces (1 s) the old 5 ms ticker scanned ~200 times.
	if n := p.scans.Load(); n > 30 {
		t.Fatalf("%d /proc scans during a 2×%v teardown", n, grace)
	}
}

// A shell that exits by itself leaves its last output in the terminal;
// Finish keeps the master open so that all of it can be read.
func TestFinishKeepsOutputReadable(t *testing.T) {
	p, err := newReaper(t).Start(Spec{Command: "/bin/sh", Args: []string{"-c", "seq 1 500"}, Account: testAccount(t), Cols: 80, Rows: 24})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	<-p.Done() // the output is still in the pty, nobody has read it yet
	p.Finish(50 * time.Millisecond)
	<-p.Stopped()
	var all []byte
	buf := make([]byte, 4096)
	for {
		n, err := p.Read(buf)
		all = append(all, buf[:n]...)
		if err != nil {
			break
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(string(all)), "\n500") && !strings.HasSuffix(strings.TrimSpace(string(all)), "500") {
		t.Fatalf("last output lost: read %d bytes ending %q", len(all), tail(all))
	}
}

func tail(b []byte) string {
	if len(b) > 40 {
		b = b[len(b)-40:]
	}
	return string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A command the daemon runs goes through the reaper, which waits for every
// child: its exit status arrives, and a cancelled run is killed and still
// reaped.
//
// The shell reports its pid through a FIFO, and the cancelled run is
// cancelled only once it has: a fixed 100 ms timeout could fire before a
// loaded machine had run the shell's first line, and the test then found
// no pid to check (25 runs in 40 failed so under load).
func TestReaperExec(t *testing.T) {
	r := newReaper(t)
	tests := []struct {
		name    string
		script  string
		cancel  bool // cancel once the shell has reported its pid
		wantErr string
	}{
		{"success", "exit 0", false, ""},
		{"exit status", "exit 3", false, "exit status 3"},
		{"killed when cancelled", "exec sleep 300", true, "signal: killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			fifo := filepath.Join(t.TempDir(), "pid")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			// O_RDWR: the open does not wait for the writer, and the read
			// ends when the test closes the FIFO, should the shell never
			// write.
			f, err := os.OpenFile(fifo, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			pids := make(chan int, 1)
			go func() {
				line := make([]byte, 32)
				n, _ := f.Read(line)
				pid, _ := strconv.Atoi(strings.TrimSpace(string(line[:n])))
				pids <- pid
				if tt.cancel {
					cancel()
				}
			}()
			cmd := exec.Command("/bin/sh", "-c", "echo $$ >"+fifo+"; "+tt.script)
			start := time.Now()
			err = r.Exec(ctx, cmd, func(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) })
			took := time.Since(start)
			if got := fmt.Sprint(err); (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && got != tt.wantErr) {
				t.Fatalf("Exec error %v, want %q", err, tt.wantErr)
			}
			if took > 10*time.Second {
				t.Fatalf("Exec returned after %v", took)
			}
			var pid int
			select {
			case pid = <-pids:
			case <-time.After(10 * time.Second):
				t.Fatal("the shell never reported its pid")
			}
			if err := syscall.Kill(pid, 0); pid <= 0 || err == nil {
				t.Fatalf("pid %d still exists (not reaped)", pid)
			}
		})
	}
}
