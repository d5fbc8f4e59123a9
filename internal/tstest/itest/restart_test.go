package itest

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

// Restart without losing a shell (issue 28): `tether upgrade PATH` makes
// the running daemon exec the binary in place, same pid, with the pty
// masters inherited and a record per session; the new run takes the
// shells back, detached, and the user's next terminal gets the same shell
// with everything it printed meanwhile.

// upgradeEnv starts a device whose runtime directory the test knows.
func upgradeEnv(t *testing.T, sessions map[string]interface{}) (*env, string) {
	rt := t.TempDir()
	s := map[string]interface{}{"StopGrace": "200ms", "MaxPerUser": 1}
	for k, v := range sessions {
		s[k] = v
	}
	e := newEnv(t, map[string]interface{}{"Sessions": s}, "RUNTIME_DIRECTORY="+rt)
	e.waitDevice()
	return e, rt
}

// upgrade runs `tether upgrade bin` as an operator would.
func upgrade(t *testing.T, rt, bin string) string {
	t.Helper()
	cmd := exec.Command(tetherBin, "upgrade", bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "RUNTIME_DIRECTORY=" + rt}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tether upgrade: %v\n%s", err, out)
	}
	return string(out)
}

// escapee starts `setsid sleep <n>` in term, a process that leaves the
// shell's terminal session, and returns its command line, the
// containment the daemon chose and the session's cgroup leaf ("" when
// the session has none). Under the containment auto picks here (a cgroup
// leaf, or a unit under systemd) a stop must end it, also once the
// session was taken back by a new run.
func escapee(t *testing.T, e *env, term *mockserver.Terminal, n int) (cmd, mode, leaf string) {
	t.Helper()
	cmd = "sleep " + strconv.Itoa(n)
	e.run(term, "setsid "+cmd+" & echo started")
	eventually(t, 5*time.Second, "the escapee", func() bool { return processExists(cmd) })
	t.Cleanup(func() { killAll(cmd) })
	logged := e.log.String()
	m := regexp.MustCompile(`msg="session containment" containment=(\S+)`).FindStringSubmatch(logged)
	if m == nil {
		t.Fatalf("the daemon did not log its containment:\n%s", logged)
	}
	if d := regexp.MustCompile(`msg="session opened".* containment=(/\S+)`).FindStringSubmatch(logged); d != nil {
		leaf = d[1]
	}
	if m[1] == "cgroup" && leaf == "" {
		t.Fatalf("a cgroup containment without a session leaf in the log:\n%s", logged)
	}
	t.Logf("containment %s, leaf %q", m[1], leaf)
	return cmd, m[1], leaf
}

// stoppedWhole checks that a stop ended everything of the session:
// under a cgroup or unit containment the escapee too, and the leaf is
// gone.
func stoppedWhole(t *testing.T, cmd, mode, leaf string) {
	t.Helper()
	if mode == "process-group" {
		// The fallback's stated limit: it cannot find the escapee.
		return
	}
	eventually(t, 5*time.Second, "the setsid escapee to end with the restored session", func() bool { return !processExists(cmd) })
	if leaf != "" {
		eventually(t, 5*time.Second, "the session's leaf to go", func() bool { _, err := os.Stat(leaf); return os.IsNotExist(err) })
	}
}

// The upgrade test of the issue: a counter job survives `tether upgrade`,
// the same user's next terminal gets the same shell (still the daemon's
// child), the job still counting, and every tick printed meanwhile.
func TestUpgradeKeepsShell(t *testing.T) {
	e, rt := upgradeEnv(t, nil)
	d := e.waitDevice()
	daemonPid := e.daemon.Process.Pid
	term := e.open(alice)
	pid := shellPid(e, term)
	e.run(term, "stty -echo")
	escCmd, mode, leaf := escapee(t, e, term, 1041)
	if _, err := io.WriteString(term, "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done &\n"); err != nil {
		t.Fatal(err)
	}
	seen := ticks(e.expect(term, "tick 5\r\n"))
	last := seen[len(seen)-1]

	upgradeStart := time.Now()
	out := upgrade(t, rt, tetherBin)
	if !strings.Contains(out, strconv.Itoa(daemonPid)) {
		t.Fatalf("upgrade output %q does not name the daemon", out)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	_, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("the upgraded daemon did not connect: %v\n%s", err, e.log.String())
	}
	t.Logf("upgrade to reconnect: %v", time.Since(upgradeStart).Round(time.Millisecond))
	term.Close()
	if got := e.daemon.Process.Pid; got != daemonPid {
		t.Fatalf("daemon pid %d, want %d", got, daemonPid)
	}
	select {
	case <-e.exited:
		t.Fatalf("the daemon exited instead of exec'ing:\n%s", e.log.String())
	default:
	}
	log := e.log.String()
	if !strings.Contains(log, "restored 1 session from the previous run") {
		t.Fatalf("no restore line in the log:\n%s", log)
	}
	// The shell is still the daemon's child: the subreaper holds.
	live, zombies := e.children()
	if !slices.Contains(live, pid) {
		t.Fatalf("shell %d is not the daemon's child after the upgrade (children %v, zombies %v)", pid, live, zombies)
	}
	if n := e.metric("tether_sessions_restored_total"); n != 1 {
		t.Fatalf("tether_sessions_restored_total %v", n)
	}

	again := openSized(e, alice, 100, 30)
	e.expect(again, reattachNotice)
	replay := e.expect(again, "tick "+strconv.Itoa(last+15)+"\r\n")
	got := ticks(replay)
	// Every tick from the first the old terminal may have missed on,
	// without a gap: the old run's replay buffer, the pty's, then live.
	if len(got) == 0 || got[0] > last+1 {
		t.Fatalf("ticks after the upgrade start at %v, want at most %d: %q", got, last+1, replay)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("ticks missed across the upgrade: %d then %d\n%q", got[i-1], got[i], replay)
		}
	}
	if p := shellPid(e, again); p != pid {
		t.Fatalf("reattached to shell %d, want %d", p, pid)
	}
	// The records directory holds this run's record, root's alone.
	fi, err := os.Stat(filepath.Join(rt, "sessions"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("records directory: %v %v", fi, err)
	}
	ents, _ := filepath.Glob(filepath.Join(rt, "sessions", "tether-*.json"))
	if len(ents) != 1 {
		t.Fatalf("records after the upgrade: %v", ents)
	}
	// The new run's record names the leaf again: it was adopted there.
	if b, err := os.ReadFile(ents[0]); err != nil || (leaf != "" && !strings.Contains(string(b), `"cgroup":"`+leaf+`"`)) {
		t.Fatalf("the restored session's record does not name its leaf %s: %s %v", leaf, b, err)
	}
	if !processExists(escCmd) {
		t.Fatal("the escapee did not survive the upgrade")
	}
	// A stop ends the session on purpose, whole, and its record goes.
	e.stopDaemon()
	if alive(pid) {
		t.Fatalf("shell %d outlived the daemon's stop", pid)
	}
	stoppedWhole(t, escCmd, mode, leaf)
	if ents, _ := filepath.Glob(filepath.Join(rt, "sessions", "tether-*.json")); len(ents) != 0 {
		t.Fatalf("records left after a stop: %v", ents)
	}
}

// An upgrade to a binary that does not run here is refused before anything
// is handed over: the daemon and its shells go on.
func TestUpgradeRefusesBrokenBinary(t *testing.T) {
	e, rt := upgradeEnv(t, nil)
	term := e.open(alice)
	pid := shellPid(e, term)
	bad := filepath.Join(t.TempDir(), "tether-broken")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	upgrade(t, rt, bad)
	eventually(t, 10*time.Second, "the refusal in the log", func() bool { return strings.Contains(e.log.String(), "upgrade refused") })
	if p := shellPid(e, term); p != pid {
		t.Fatalf("terminal now reaches shell %d, want %d", p, pid)
	}
	if strings.Contains(e.log.String(), "handing sessions over") {
		t.Fatal("sessions handed over to a binary that does not run")
	}
}

// With detached sessions off, nothing can wait for its user: an upgrade
// ends the sessions as a stop would, and the new run starts clean.
func TestUpgradeWithoutDetachedEndsSessions(t *testing.T) {
	e, rt := upgradeEnv(t, map[string]interface{}{"DetachedTimeout": "0s"})
	d := e.waitDevice()
	term := e.open(alice)
	pid := shellPid(e, term)
	upgrade(t, rt, tetherBin)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	_, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("the upgraded daemon did not connect: %v", err)
	}
	eventually(t, 10*time.Second, "the shell to end", func() bool { return !alive(pid) })
	if ents, _ := filepath.Glob(filepath.Join(rt, "sessions", "tether-*.json")); len(ents) != 0 {
		t.Fatalf("records kept with detached sessions off: %v", ents)
	}
}

// fdStore stands in for systemd's file-descriptor store on the daemon's
// NOTIFY_SOCKET: it keeps the descriptors sent with FDSTORE=1 by FDNAME
// and drops them on FDSTOREREMOVE=1, as systemd does.
type fdStore struct {
	path string
	mu   sync.Mutex
	fds  map[string]*os.File
	log  []string // FDSTORE / FDSTOREREMOVE events, in order
	st   string   // the last STATUS=
}

func newFDStore(t *testing.T) *fdStore {
	t.Helper()
	s := &fdStore{path: filepath.Join(dbustest.ShortTempDir(t), "notify"), fds: map[string]*os.File{}}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			var fds []int
			if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, cm := range cms {
					if r, err := syscall.ParseUnixRights(&cm); err == nil {
						fds = append(fds, r...)
					}
				}
			}
			s.handle(string(buf[:n]), fds)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		s.mu.Lock()
		for _, f := range s.fds {
			f.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func (s *fdStore) handle(msg string, fds []int) {
	vars := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		k, v, _ := strings.Cut(line, "=")
		vars[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := vars["STATUS"]; ok {
		s.st = st
	}
	name := vars["FDNAME"]
	switch {
	case vars["FDSTORE"] == "1" && len(fds) == 1:
		syscall.CloseOnExec(fds[0])
		if old := s.fds[name]; old != nil {
			old.Close()
		}
		s.fds[name] = os.NewFile(uintptr(fds[0]), name)
		s.log = append(s.log, "store "+name)
		return
	case vars["FDSTOREREMOVE"] == "1":
		if f := s.fds[name]; f != nil {
			f.Close()
			delete(s.fds, name)
		}
		s.log = append(s.log, "remove "+name)
	}
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// names lists the stored descriptors' names.
func (s *fdStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.fds {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// pass hands the stored descriptors to e's next start as systemd does:
// from descriptor 3, named in LISTEN_FDNAMES, with LISTEN_PID set by a
// wrapper to the pid that execs the daemon.
func (s *fdStore) pass(e *env) {
	names := s.names()
	s.mu.Lock()
	e.files = nil
	for _, n := range names {
		// Duplicates: the store may drop its own meanwhile.
		fd, err := syscall.Dup(int(s.fds[n].Fd()))
		if err != nil {
			e.t.Fatal(err)
		}
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), n)
		e.t.Cleanup(func() { f.Close() })
		e.files = append(e.files, f)
	}
	s.mu.Unlock()
	e.extraEnv = append(e.extraEnv, "LISTEN_FDS="+strconv.Itoa(len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	e.wrap = []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}
}

func (s *fdStore) status() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// The systemd path after a crash (the watchdog's SIGABRT, Restart=):
// every session's pty master went to the descriptor store when it opened,
// the daemon dies without a word, and the next start takes the stored
// masters back (LISTEN_FDS from 3, by name) and matches them with the
// records. The shell, in a unit of its own under systemd and here simply
// orphaned, runs on; the user's next terminal gets it with what it
// printed while no daemon ran.
func TestCrashRestoreFromFDStore(t *testing.T) {
	store := newFDStore(t)
	rt := t.TempDir()
	e := newEnv(t, map[string]interface{}{"Sessions": map[string]interface{}{"StopGrace": "200ms", "MaxPerUser": 1}},
		"RUNTIME_DIRECTORY="+rt, "NOTIFY_SOCKET="+store.path)
	d := e.waitDevice()
	term := e.open(alice)
	pid := shellPid(e, term)
	e.run(term, "stty -echo")
	escCmd, mode, leaf := escapee(t, e, term, 1042)
	if _, err := io.WriteString(term, "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done &\n"); err != nil {
		t.Fatal(err)
	}
	seen := ticks(e.expect(term, "tick 5\r\n"))
	eventually(t, 5*time.Second, "the master in the store", func() bool { return len(store.names()) == 1 })
	key := store.names()[0]
	if !strings.HasPrefix(key, "tether-"+strconv.Itoa(pid)+"-") {
		t.Fatalf("stored as %q, want a name of shell %d", key, pid)
	}

	if err := e.daemon.Process.Signal(syscall.SIGABRT); err != nil {
		t.Fatal(err)
	}
	<-e.exited
	// Everything the old terminal got up to the crash: what the old run
	// delivered is not in the pty any more.
	dctx, dcancel := context.WithTimeout(e.ctx, 2*time.Second)
	rest, _ := term.Expect(dctx, "\x00never printed")
	dcancel()
	seen = append(seen, ticks(rest)...)
	term.Close()
	if !alive(pid) {
		t.Fatal("the shell died with the daemon although its master is in the store")
	}
	time.Sleep(time.Second) // ticks pile up in the pty

	if leaf != "" {
		if _, err := os.Stat(leaf); err != nil {
			t.Fatalf("the session's leaf went with the crash: %v", err)
		}
	}
	store.pass(e)
	restartStart := time.Now()
	e.startDaemon()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	_, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("the restarted daemon did not connect: %v\n%s", err, e.log.String())
	}
	t.Logf("start to reconnect after the crash: %v", time.Since(restartStart).Round(time.Millisecond))
	if !strings.Contains(e.log.String(), "restored 1 session from the previous run") {
		t.Fatalf("no restore line:\n%s", e.log.String())
	}
	eventually(t, 5*time.Second, "the status line", func() bool {
		return strings.Contains(store.status(), "restored 1 session from the previous run")
	})
	again := openSized(e, alice, 100, 30)
	e.expect(again, reattachNotice)
	last := seen[len(seen)-1]
	replay := e.expect(again, "tick "+strconv.Itoa(last+15)+"\r\n")
	got := ticks(replay)
	// The old terminal saw up to last; the pty kept the rest.
	if len(got) == 0 || got[0] > last+1 {
		t.Fatalf("ticks after the crash start at %v, want at most %d: %q", got, last+1, replay)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("ticks missed across the crash: %d then %d", got[i-1], got[i])
		}
	}
	if p := shellPid(e, again); p != pid {
		t.Fatalf("reattached to shell %d, want %d", p, pid)
	}
	// A stop (no restart job: there is no systemd to ask) ends it, and
	// its descriptor leaves the store.
	e.stopDaemon()
	eventually(t, 5*time.Second, "the shell to end", func() bool { return !alive(pid) })
	stoppedWhole(t, escCmd, mode, leaf)
	if n := store.names(); len(n) != 0 {
		t.Fatalf("left in the store after a stop: %v", n)
	}
}

// A restored shell that exits by itself ends its session as any other:
// the user is told (its exit status is not known to the new run), its
// record goes, and the daemon reaps it.
func TestUpgradedShellExits(t *testing.T) {
	e, rt := upgradeEnv(t, nil)
	d := e.waitDevice()
	term := e.open(alice)
	pid := shellPid(e, term)
	upgrade(t, rt, tetherBin)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	_, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("the upgraded daemon did not connect: %v", err)
	}
	term.Close()
	again := e.open(alice)
	e.expect(again, reattachNotice)
	if p := shellPid(e, again); p != pid {
		t.Fatalf("reattached to shell %d, want %d", p, pid)
	}
	if _, err := io.WriteString(again, "exit 3\n"); err != nil {
		t.Fatal(err)
	}
	if body := e.waitStop(again); !strings.Contains(body, "exit status unknown") {
		t.Fatalf("stop notice %q", body)
	}
	eventually(t, 10*time.Second, "the shell reaped", func() bool {
		live, zombies := e.children()
		return !slices.Contains(live, pid) && !slices.Contains(zombies, pid)
	})
	eventually(t, 5*time.Second, "the record removed", func() bool {
		ents, _ := filepath.Glob(filepath.Join(rt, "sessions", "tether-*.json"))
		return len(ents) == 0
	})
}
