package itest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/utmp"
)

var ttyRE = regexp.MustCompile(`tty=/dev/(pts/\d+)`)

// recordsDir holds an empty utmp and wtmp for the daemon to write.
func recordsDir(t *testing.T) string {
	d := t.TempDir()
	for _, f := range []string{"utmp", "wtmp"} {
		if err := os.WriteFile(filepath.Join(d, f), nil, 0o664); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func records(t *testing.T, path string) []utmp.Record {
	t.Helper()
	recs, err := utmp.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// A shell has one utmp entry while it lives, however often its user
// reattaches, and a wtmp login and logout; who reads the entry.
func TestLoginRecords(t *testing.T) {
	dir := recordsDir(t)
	ut, wt := filepath.Join(dir, "utmp"), filepath.Join(dir, "wtmp")
	e := newEnvWith(t, map[string]interface{}{"Sessions": map[string]interface{}{"StopGrace": "200ms"}}, nil,
		"TETHERTEST_LOGIN_RECORDS_DIR="+dir)
	e.waitDevice()
	term := e.open(alice)
	pid := shellPid(e, term)
	m := ttyRE.FindStringSubmatch(e.run(term, "echo tty=$(tty)"))
	if m == nil {
		t.Fatal("the shell has no tty")
	}
	line, host := m[1], "tether:"+mockserver.UserID(alice)

	u := records(t, ut)
	if len(u) != 1 {
		t.Fatalf("utmp: %+v", u)
	}
	r := u[0]
	if r.Type != utmp.UserProcess || r.Line != line || r.User != shellUser(t) || r.Host != host ||
		int(r.PID) != pid || time.Since(r.Time) > time.Minute {
		t.Fatalf("utmp entry %+v, want a user process on %s as %s from %s, pid %d", r, line, shellUser(t), host, pid)
	}
	if _, err := exec.LookPath("who"); err == nil {
		out, err := exec.Command("who", ut).CombinedOutput()
		if err != nil || !strings.Contains(string(out), line) || !strings.Contains(string(out), "("+host+")") {
			t.Fatalf("who %s: %v\n%s", ut, err, out)
		}
	}

	// The user leaves and comes back: the same shell, no new entry.
	term.Close()
	again := e.open(alice)
	e.expect(again, reattachNotice)
	if got := shellPid(e, again); got != pid {
		t.Fatalf("reattached to %d, want %d", got, pid)
	}
	if u, w := records(t, ut), records(t, wt); len(u) != 1 || u[0].Type != utmp.UserProcess || len(w) != 1 {
		t.Fatalf("after a reattach: utmp %+v, wtmp %+v", u, w)
	}

	if err := again.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the logout record", func() bool { return len(records(t, wt)) == 2 })
	u, w := records(t, ut), records(t, wt)
	if len(u) != 1 || u[0].Type != utmp.DeadProcess || u[0].Line != line {
		t.Fatalf("utmp after the end: %+v", u)
	}
	if w[0].Type != utmp.UserProcess || w[0].Host != host || w[1].Type != utmp.DeadProcess || w[1].Line != line {
		t.Fatalf("wtmp: %+v", w)
	}
	if !strings.Contains(e.log.String(), "tty=pts/") {
		t.Fatal("session_open does not name the terminal")
	}
}

// Sessions.LoginRecords false writes nothing.
func TestLoginRecordsOff(t *testing.T) {
	dir := recordsDir(t)
	e := newEnvWith(t, map[string]interface{}{"Sessions": map[string]interface{}{"LoginRecords": false}}, nil,
		"TETHERTEST_LOGIN_RECORDS_DIR="+dir)
	e.waitDevice()
	term := e.open(alice)
	e.run(term, "true")
	if err := term.Stop(); err != nil {
		t.Fatal(err)
	}
	e.waitStop(term)
	for _, f := range []string{"utmp", "wtmp"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() != 0 {
			t.Errorf("%s written with LoginRecords off (%v)", f, err)
		}
	}
	if !strings.Contains(e.log.String(), "login records are off") {
		t.Error("no word at start that login records are off")
	}
}

// A shell ended by the daemon's shutdown is logged out too.
func TestLoginRecordsShutdown(t *testing.T) {
	dir := recordsDir(t)
	ut, wt := filepath.Join(dir, "utmp"), filepath.Join(dir, "wtmp")
	e := newEnvWith(t, map[string]interface{}{"Sessions": map[string]interface{}{"StopGrace": "200ms"}}, nil,
		"TETHERTEST_LOGIN_RECORDS_DIR="+dir)
	e.waitDevice()
	term := e.open(alice)
	e.run(term, "true")
	if u := records(t, ut); len(u) != 1 || u[0].Type != utmp.UserProcess {
		t.Fatalf("utmp: %+v", u)
	}
	e.stopDaemon()
	u, w := records(t, ut), records(t, wt)
	if len(u) != 1 || u[0].Type != utmp.DeadProcess || len(w) != 2 || w[1].Type != utmp.DeadProcess {
		t.Fatalf("after the shutdown: utmp %+v, wtmp %+v", u, w)
	}
}

// A shell kept across an upgrade keeps its one login: the old run writes
// no logout when it hands the shell over, and the new run writes it when
// the shell ends.
func TestLoginRecordsAcrossUpgrade(t *testing.T) {
	dir := recordsDir(t)
	ut, wt := filepath.Join(dir, "utmp"), filepath.Join(dir, "wtmp")
	rt := t.TempDir()
	e := newEnvWith(t, map[string]interface{}{"Sessions": map[string]interface{}{"StopGrace": "200ms"}}, nil,
		"TETHERTEST_LOGIN_RECORDS_DIR="+dir, "RUNTIME_DIRECTORY="+rt)
	d := e.waitDevice()
	term := e.open(alice)
	pid := shellPid(e, term)
	if u := records(t, ut); len(u) != 1 || u[0].Type != utmp.UserProcess {
		t.Fatalf("utmp: %+v", u)
	}

	upgrade(t, rt, tetherBin)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	_, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("the upgraded daemon did not connect: %v\n%s", err, e.log.String())
	}
	if u, w := records(t, ut), records(t, wt); len(u) != 1 || u[0].Type != utmp.UserProcess || int(u[0].PID) != pid || len(w) != 1 {
		t.Fatalf("after the upgrade: utmp %+v, wtmp %+v", u, w)
	}

	term.Close()
	again := e.open(alice)
	e.expect(again, reattachNotice)
	if err := again.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the logout record", func() bool { return len(records(t, wt)) == 2 })
	u, w := records(t, ut), records(t, wt)
	if len(u) != 1 || u[0].Type != utmp.DeadProcess || w[1].Type != utmp.DeadProcess || w[1].Line != w[0].Line {
		t.Fatalf("after the end: utmp %+v, wtmp %+v", u, w)
	}
}
