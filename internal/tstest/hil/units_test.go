//go:build hil

package hiltests

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// Session containment in the guests (issue 27): each session's shell in
// a transient unit of its own (systemd guest) or a cgroup v2 leaf
// (minimal guest, which mounts cgroup2), with the default limits: a
// quarter of RAM, 256 tasks, CPU weight 50.

// memTotal reads the guest's RAM in bytes.
func (r *rig) memTotal(term *mockserver.Terminal) uint64 {
	r.t.Helper()
	v := r.value(term, "mem", `echo "mem=$(grep MemTotal /proc/meminfo)"`)
	f := strings.Fields(strings.TrimPrefix(v, "MemTotal:"))
	kb, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		r.t.Fatalf("MemTotal %q: %v", v, err)
	}
	return kb << 10
}

// quarter is the default Sessions.MemoryMax of "25%" resolved as tether
// does.
func quarter(ram uint64) uint64 { return ram/1000*250 + ram%1000*250/1000 }

// ownCgroup reads the cgroup of the shell of term.
func (r *rig) ownCgroup(term *mockserver.Terminal) string {
	r.t.Helper()
	return r.value(term, "cg", `echo "cg=$(grep '^0::' /proc/self/cgroup | cut -c4-)"`)
}

// running lists (in check's shell) the processes whose command line is
// one of cmds, with arguments: "pid pid ..."; portable to busybox, which
// has no pgrep in every build.
func (r *rig) running(check *mockserver.Terminal, cmds ...string) string {
	r.t.Helper()
	var pats []string
	for _, c := range cmds {
		pats = append(pats, fmt.Sprintf(`"%s "`, c))
	}
	return r.value(check, "running", `l=""; for f in /proc/[0-9]*/cmdline; do case "$(tr '\000' ' ' <$f 2>/dev/null)" in `+
		strings.Join(pats, "|")+`) p=${f#/proc/}; l="$l ${p%/cmdline}";; esac; done; echo "running=$l"`)
}

// escapees starts, in term's shell, a process that leaves the terminal
// session (setsid) and a double-forked one that also ignores HUP and
// TERM; it returns their command lines once check sees both.
func (r *rig) escapees(term, check *mockserver.Terminal, tag string) []string {
	r.t.Helper()
	a, b := "sleep 10"+tag+"1", "sleep 10"+tag+"2"
	r.run(term, fmt.Sprintf(`setsid %s & (setsid sh -c 'trap "" HUP TERM; %s & wait' &); echo started`, a, b))
	r.eventually(30*time.Second, 200*time.Millisecond, "escapees running", func() error {
		if l := strings.Fields(r.running(check, a, b)); len(l) != 2 {
			return fmt.Errorf("%s and %s: processes %v", a, b, l)
		}
		return nil
	})
	return []string{a, b}
}

// stopKillsEscapees stops term's session and waits until none of cmds is
// left; it returns how long that took. It polls the pids with the kill
// builtin: a poll costs no fork, so the figure is the teardown's, not the
// emulated guest's.
func (r *rig) stopKillsEscapees(term, check *mockserver.Terminal, cmds []string) time.Duration {
	r.t.Helper()
	pids := r.running(check, cmds...)
	start := time.Now()
	if err := term.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.eventually(30*time.Second, 50*time.Millisecond, "escapees gone after the stop", func() error {
		if left := r.value(check, "left", `l=""; for p in `+pids+`; do kill -0 $p 2>/dev/null && l="$l $p"; done; echo "left=$l"`); left != "" {
			return fmt.Errorf("still running: %s", left)
		}
		return nil
	})
	took := time.Since(start)
	r.waitStop(term)
	if left := r.running(check, cmds...); left != "" {
		r.t.Fatalf("still running after the stop: %s", left)
	}
	return took
}

// hog types a memory hog into term and waits for the device to end the
// session; meanwhile other keeps answering. It returns the stop notice
// and how long the hog took to be killed.
func (r *rig) hog(term, other *mockserver.Terminal, cmd string) (string, time.Duration) {
	r.t.Helper()
	start := time.Now()
	// Split, so that the echoed command line does not hold the marker.
	fmt.Fprintf(term, "%s; echo hog-sur''vived\n", cmd)
	ctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	stopped := make(chan string, 1)
	go func() {
		m, err := term.WaitStop(ctx)
		if err != nil {
			stopped <- "error: " + err.Error()
			return
		}
		stopped <- string(m.Body)
	}()
	for i := 0; ; i++ {
		select {
		case body := <-stopped:
			took := time.Since(start)
			if strings.Contains(term.Output(), "hog-survived") {
				r.t.Errorf("the hog finished instead of being killed")
			}
			return body, took
		case <-time.After(500 * time.Millisecond):
		}
		// The other session keeps working all along.
		if out := r.run(other, fmt.Sprintf("echo still-%d", i)); !strings.Contains(out, fmt.Sprintf("still-%d", i)) {
			r.t.Fatalf("the other session stopped answering while the hog ran: %q", out)
		}
	}
}

// unitsSystemd: the systemd guest runs each shell in a unit of its own in
// tether.slice, with the limits, job control on the pty, and whole-unit
// teardown; a memory hog ends its own session only.
func unitsSystemd(r *rig, admin *mockserver.Terminal) {
	before := r.unit(admin)
	s1 := r.open(alice)
	cg := r.ownCgroup(s1)
	m := regexp.MustCompile(`^/tether\.slice/(tether-session-[a-z0-9]+(-[0-9]+)?\.service)$`).FindStringSubmatch(cg)
	if m == nil {
		r.t.Fatalf("the shell runs in cgroup %q, not in a unit of its own in tether.slice", cg)
	}
	unit := m[1]
	if sid := s1.SID(); !strings.HasPrefix(unit, "tether-session-"+shortSID(sid)) {
		r.t.Errorf("unit %s is not named after session %s", unit, sid)
	}
	props := map[string]string{}
	for _, line := range strings.Split(r.run(admin, "systemctl show --no-pager -p MemoryMax -p TasksMax -p CPUWeight -p Slice -p User -p KillMode -p Type "+unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			props[k] = v
		}
	}
	want := map[string]string{"MemoryMax": strconv.FormatUint(quarter(r.memTotal(admin)), 10), "TasksMax": "256", "CPUWeight": "50",
		"Slice": "tether.slice", "User": "root", "KillMode": "control-group", "Type": "exec"}
	for k, w := range want {
		if props[k] != w {
			r.t.Errorf("%s: %s=%q, want %q", unit, k, props[k], w)
		}
	}
	r.t.Logf("%s: %v", unit, props)
	if out := r.run(admin, "systemctl status --no-pager tether.slice"); !strings.Contains(out, unit) {
		r.t.Errorf("systemctl status tether.slice does not list %s:\n%s", unit, out)
	}

	// The pty's slave is the shell's controlling terminal: job control,
	// and Ctrl-C reaches the foreground job.
	if ctty := r.value(s1, "ctty", `echo "ctty=$(ps -o tty= -p $$)"`); !strings.HasPrefix(ctty, "pts/") {
		r.t.Errorf("the shell has no controlling terminal: %q", ctty)
	}
	if out := r.run(s1, "sleep 101 & jobs"); !strings.Contains(out, "sleep 101") {
		r.t.Errorf("jobs does not list the background job: %q", out)
	}
	// printf joins the marker, so the echoed line does not hold it.
	_, _ = io.WriteString(s1, `sh -c 'trap "printf \"%s%s\\n\" got- int; exit 7" INT; sleep 102 & wait'`+"\n")
	r.eventually(30*time.Second, 200*time.Millisecond, "foreground job running", func() error {
		if l := strings.Fields(r.running(admin, "sleep 102")); len(l) != 1 {
			return fmt.Errorf("sleep 102 processes: %v", l)
		}
		return nil
	})
	fmt.Fprint(s1, "\x03")
	ctx, cancel := context.WithTimeout(r.ctx, cmdTimeout)
	if _, err := s1.Expect(ctx, "got-int"); err != nil {
		r.t.Errorf("Ctrl-C did not reach the foreground job: %v", err)
	}
	cancel()

	cmds := r.escapees(s1, admin, "3")
	took := r.stopKillsEscapees(s1, admin, cmds)
	r.t.Logf("stop with a setsid child and a double-forked one: all gone %v after the stop", round(took))
	r.extra = append(r.extra, "unit_stop_escapees="+round(took))
	r.eventually(30*time.Second, 500*time.Millisecond, "unit collected", func() error {
		if st := r.value(admin, "st", "echo \"st=$(systemctl show -P LoadState "+unit+")\""); st != "not-found" {
			return fmt.Errorf("%s LoadState=%s", unit, st)
		}
		return nil
	})

	// A memory hog hits its own ceiling; the other session, tether and
	// its watchdog carry on.
	other := r.open(rotation)
	victim := r.open(alice)
	vunit := strings.TrimPrefix(r.ownCgroup(victim), "/tether.slice/")
	body, killed := r.hog(victim, other, "head -c 4G /dev/zero | tail")
	if !strings.Contains(body, "memory limit") {
		r.t.Errorf("the hog's session ended with %q, not its memory limit", body)
	}
	r.t.Logf("memory hog ended %v after it started: %q", round(killed), body)
	r.extra = append(r.extra, "unit_hog_killed="+round(killed))
	oom := r.run(admin, "journalctl -k --no-pager | grep -o 'Killed process .*' | tail -n 1")
	r.t.Logf("kernel: %s", strings.TrimSpace(oom))
	if rss := regexp.MustCompile(`anon-rss:(\d+)kB`).FindStringSubmatch(oom); rss != nil {
		r.extra = append(r.extra, "unit_hog_rss="+rss[1]+"kB")
	}
	if out := r.run(admin, "journalctl --no-pager -u "+vunit+" | tail -n 5"); !strings.Contains(out, "oom") && !strings.Contains(out, "OOM") {
		r.t.Errorf("the unit's journal does not say it hit its memory limit:\n%s", out)
	}
	r.eventually(30*time.Second, time.Second, "journal says memory_limit", func() error {
		out := r.run(admin, "journalctl --no-pager -o verbose -t tether TETHER_EVENT=session_close TETHER_SESSION_ID="+victim.SID())
		if !strings.Contains(out, "TETHER_REASON=memory_limit") {
			return fmt.Errorf("no TETHER_REASON=memory_limit in:\n%s", out)
		}
		return nil
	})
	after := r.unit(admin)
	if after["MainPID"] != before["MainPID"] || after["NRestarts"] != before["NRestarts"] || after["ActiveState"] != "active" {
		r.t.Errorf("tether.service changed under the hog: before %v, after %v", before, after)
	}
	r.run(other, "echo other-still-here")

	// Metrics: the live session's usage, and the session the limit ended.
	_, exp, err := r.scrape("/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	if v, ok := metric(exp, `tether_session_memory_bytes{session="`+shortSID(other.SID())+`"}`); !ok || v <= 0 {
		r.t.Errorf("no memory figure for the live session %s", other.SID())
	}
	if v, _ := metric(exp, `tether_sessions_closed_total{proto="shell",reason="memory_limit"}`); v < 1 {
		r.t.Errorf(`tether_sessions_closed_total{reason="memory_limit"} = %v, want at least 1`, v)
	}
	if err := other.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.waitStop(other)
}

// unitsMinimal: the busybox guest mounts cgroup2, so each shell gets a
// leaf with the limits, and the stop ends everything in it.
func unitsMinimal(r *rig) {
	check := r.open(admin)
	s1 := r.open(alice)
	cg := r.ownCgroup(s1)
	if !regexp.MustCompile(`^/tether/session-[a-z0-9]+(-[0-9]+)?$`).MatchString(cg) {
		r.t.Fatalf("the shell runs in cgroup %q, not in a leaf of its own", cg)
	}
	dir := "/sys/fs/cgroup" + cg
	got := r.value(check, "limits", fmt.Sprintf(`echo "limits=$(cat %[1]s/memory.max) $(cat %[1]s/pids.max) $(cat %[1]s/cpu.weight) $(cat %[1]s/memory.oom.group)"`, dir))
	// The kernel rounds memory.max down to whole pages.
	want := quarter(r.memTotal(check)) &^ 4095
	if got != fmt.Sprintf("%d 256 50 1", want) {
		r.t.Errorf("%s: memory.max pids.max cpu.weight memory.oom.group = %q, want \"%d 256 50 1\"", dir, got, want)
	}
	cmds := r.escapees(s1, check, "4")
	took := r.stopKillsEscapees(s1, check, cmds)
	r.t.Logf("stop with a setsid child and a double-forked one: all gone %v after the stop", round(took))
	r.extra = append(r.extra, "cgroup_stop_escapees="+round(took))
	r.eventually(30*time.Second, 200*time.Millisecond, "session cgroup removed", func() error {
		if v := r.value(check, "there", fmt.Sprintf(`echo "there=$([ -d %s ] && echo yes)"`, dir)); v != "" {
			return fmt.Errorf("%s still exists", dir)
		}
		return nil
	})

	// A task ceiling: forks beyond 256 fail inside the session only.
	s2 := r.open(alice)
	dir2 := "/sys/fs/cgroup" + r.ownCgroup(s2)
	// Only builtins after the loop: at the ceiling nothing can fork.
	r.run(s2, `i=0; while [ $i -lt 300 ]; do sleep 300 & i=$((i+1)); done 2>/dev/null; echo loop-done`)
	tasks := r.value(check, "tasks", fmt.Sprintf(`echo "tasks=$(cat %[1]s/pids.current) $(grep max %[1]s/pids.events)"`, dir2))
	f := strings.Fields(tasks)
	if n, _ := strconv.Atoi(f[0]); len(f) != 3 || n > 256 || f[2] == "0" {
		r.t.Errorf("pids.current and pids.events after 300 forks: %q, want at most 256 and a count of refused forks", tasks)
	}
	r.t.Logf("at the task ceiling of 256: pids.current, pids.events = %s", tasks)
	r.run(check, "echo admin-can-still-fork-$(echo yes)")
	if err := s2.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.waitStop(s2)

	// A memory hog (busybox awk doubling a string) is killed with its
	// whole session; the other session goes on.
	victim := r.open(alice)
	body, killed := r.hog(victim, check, `awk 'BEGIN { s = "x"; while (1) s = s s }'`)
	if !strings.Contains(body, "memory limit") {
		r.t.Errorf("the hog's session ended with %q, not its memory limit", body)
	}
	r.t.Logf("memory hog ended %v after it started: %q", round(killed), body)
	r.extra = append(r.extra, "cgroup_hog_killed="+round(killed))
	oom := r.run(check, "dmesg | grep -o 'Killed process .*' | tail -n 1")
	r.t.Logf("kernel: %s", strings.TrimSpace(oom))
	if rss := regexp.MustCompile(`anon-rss:(\d+)kB`).FindStringSubmatch(oom); rss != nil {
		r.extra = append(r.extra, "cgroup_hog_rss="+rss[1]+"kB")
	}
	r.run(check, "echo admin-still-here")
}

// shortSID is how tether names a session's unit or cgroup: its first 8
// letters and digits, lower-cased.
func shortSID(sid string) string {
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
	return string(b)
}
