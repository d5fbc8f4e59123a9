package itest

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
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
	if _, err := io.WriteString(term, "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done &\n"); err != nil {
		t.Fatal(err)
	}
	seen := ticks(e.expect(term, "tick 5\r\n"))
	last := seen[len(seen)-1]

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
	if ents, _ := filepath.Glob(filepath.Join(rt, "sessions", "tether-*.json")); len(ents) != 1 {
		t.Fatalf("records after the upgrade: %v", ents)
	}
	// A stop ends the session on purpose, and its record goes.
	e.stopDaemon()
	if alive(pid) {
		t.Fatalf("shell %d outlived the daemon's stop", pid)
	}
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
