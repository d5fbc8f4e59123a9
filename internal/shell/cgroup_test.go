package shell

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCgroup makes a cgroup v2 subtree of the test's own (removed at the
// end) and a containment on it. Without a writable cgroup v2 hierarchy
// the cgroup path cannot run at all; the HIL minimal guests run it then.
func testCgroup(t *testing.T, lim Limits) *Containment {
	t.Helper()
	mnt := cgroup2Mount("/proc/self/mountinfo")
	own, err := ownCgroup()
	if mnt == "" || err != nil || os.Geteuid() != 0 {
		t.Skipf("no writable cgroup v2 hierarchy here (mount %q, own %q, %v, euid %d)", mnt, own, err, os.Geteuid())
	}
	parent := filepath.Join(mnt, own)
	b, err := setupBase(mnt, parent, fmt.Sprintf("tether-test-%d", os.Getpid()), lim)
	if err != nil {
		t.Skipf("cgroup v2 subtree not writable here: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(b.dir); err != nil {
			t.Errorf("test cgroup left behind: %v", err)
		}
	})
	return &Containment{mode: ModeCgroup, cg: b, reason: b.describe()}
}

// pidsOf lists the processes running a command line with the marker.
func pidsOf(marker string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), marker) && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// A process that left the shell's terminal session (setsid) and a
// double-forked daemon that ignores HUP and TERM: the process group
// teardown cannot find them, the cgroup's finds everything and removes
// the cgroup.
func TestStopEndsEscapedProcesses(t *testing.T) {
	tests := []struct {
		name     string
		box      func(t *testing.T) *Containment
		survives bool // the escapees outlive the stop
	}{
		{"process group", func(*testing.T) *Containment { return nil }, true},
		{"cgroup", func(t *testing.T) *Containment { return testCgroup(t, DefaultLimits()) }, false},
		// Kernels before 5.14 have no cgroup.kill.
		{"cgroup, freeze and kill", func(t *testing.T) *Containment {
			c := testCgroup(t, DefaultLimits())
			c.cg.kill = false
			return c
		}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReaper(t)
			r.Contain(tt.box(t))
			p, err := r.Start(Spec{Command: "/bin/sh", Args: []string{"-i"}, Account: testAccount(t), Cols: 80, Rows: 24,
				SessionID: fmt.Sprintf("9e5c%04d-test", i)})
			if err != nil {
				t.Fatal(err)
			}
			out := startReader(t, p)
			// Durations unique to this run: escapees a failed run left
			// behind must not be counted as this run's.
			a := fmt.Sprintf("%d%d1", 4000+os.Getpid()%5000, i)
			b := fmt.Sprintf("%d%d2", 4000+os.Getpid()%5000, i)
			t.Cleanup(func() {
				for _, pid := range append(pidsOf("sleep\x00"+a), pidsOf("sleep\x00"+b)...) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			fmt.Fprintf(p, "setsid sleep %s & (setsid sh -c 'trap \"\" HUP TERM; sleep %s & wait' &); echo started\n", a, b)
			out.expect("started")
			var escapees []int
			eventually(t, "escapees started", func() bool {
				escapees = append(pidsOf("sleep\x00"+a), pidsOf("sleep\x00"+b)...)
				return len(escapees) == 2
			})
			leafDir := p.cgroupDir
			begin := time.Now()
			p.Stop(100 * time.Millisecond)
			select {
			case <-p.Stopped():
			case <-time.After(10 * time.Second):
				t.Fatal("stop did not finish")
			}
			took := time.Since(begin)
			var left []int
			for _, pid := range escapees {
				if alive(pid) {
					left = append(left, pid)
				}
			}
			if tt.survives != (len(left) > 0) {
				t.Fatalf("after stop, alive escapees %v of %v (survival expected: %v)", left, escapees, tt.survives)
			}
			t.Logf("%s: stop took %v; escapees alive: %v", tt.name, took.Round(time.Millisecond), left)
			if leafDir != "" {
				if _, err := os.Stat(leafDir); !os.IsNotExist(err) {
					t.Fatalf("session cgroup %s not removed: %v", leafDir, err)
				}
			}
			for range out.out {
			}
		})
	}
}

// A session's task ceiling: forks beyond pids.max fail inside the
// session, and the count is kept.
func TestCgroupTasksMax(t *testing.T) {
	c := testCgroup(t, Limits{TasksMax: 8})
	if !contains(c.cg.controllers, "pids") {
		t.Skipf("the pids controller is not available in this cgroup v2 hierarchy (%s)", c.Reason())
	}
	r := newReaper(t)
	r.Contain(c)
	p, err := r.Start(Spec{Command: "/bin/sh", Args: []string{"-i"}, Account: testAccount(t), Cols: 80, Rows: 24, SessionID: "pidsmax"})
	if err != nil {
		t.Fatal(err)
	}
	out := startReader(t, p)
	fmt.Fprintf(p, "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 60 & done 2>/dev/null; echo for''ked\n")
	out.expect("forked")
	eventually(t, "pids.max counted", func() bool { _, forks := p.leaf.limitHit(); return forks > 0 })
	if n := len(p.leaf.pids()); n > 8 {
		t.Fatalf("%d processes in a session limited to 8", n)
	}
	p.Stop(50 * time.Millisecond)
	<-p.Stopped()
	p.limMu.Lock()
	defer p.limMu.Unlock()
	if p.forkFails == 0 {
		t.Fatal("the fork failures were not counted")
	}
	for range out.out {
	}
}

// A shell handed over from its cgroup leaf keeps it when adopted: a stop
// of the adopted Process still ends a process that left the terminal
// session (setsid) before the hand-over, and removes the leaf. A record
// naming a leaf that does not hold the shell, or a cgroup outside the
// sessions' subtree, is refused.
func TestAdoptKeepsCgroupLeaf(t *testing.T) {
	c := testCgroup(t, DefaultLimits())
	r := newReaper(t)
	r.Contain(c)
	p, err := r.Start(Spec{Command: "/bin/sh", Args: []string{"-i"}, Account: testAccount(t), Cols: 80, Rows: 24, SessionID: "adoptleaf"})
	if err != nil {
		t.Fatal(err)
	}
	out := startReader(t, p)
	fmt.Fprintf(p, "setsid sleep 4711 & echo sta''rted\n")
	out.expect("started")
	var escapee []int
	eventually(t, "escapee started", func() bool { escapee = pidsOf("sleep\x004711"); return len(escapee) == 1 })
	t.Cleanup(func() { _ = syscall.Kill(escapee[0], syscall.SIGKILL) })
	held, pid := p.Held(), p.Pid()
	if held.Cgroup == "" || held.Unit != "" {
		t.Fatalf("held %+v, want the leaf", held)
	}
	m := p.HandOver()
	for range out.out {
	}
	dup := func() *os.File {
		fd, err := syscall.Dup(int(m.Fd()))
		if err != nil {
			t.Fatalf("dup %d: %v", m.Fd(), err)
		}
		syscall.CloseOnExec(fd)
		return os.NewFile(uintptr(fd), "master")
	}

	// Refused: never put a process under a session it is not in.
	other, err := r.box.cg.newLeaf("other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.remove()
	for _, bad := range []Held{
		{Cgroup: other.dir},                         // a leaf of ours, not the shell's
		{Cgroup: filepath.Dir(held.Cgroup)},         // the subtree itself
		{Cgroup: held.Cgroup + "/../session-other"}, // not clean
		{Cgroup: "/sys/fs/cgroup/session-x"},        // outside the subtree
		{Unit: "tether-session-x.service"},          // no units in this run
		{Unit: "u.service", Cgroup: held.Cgroup},
	} {
		if q, err := r.Adopt(dup(), pid, bad); err == nil {
			q.Close()
			t.Errorf("adopted with %+v", bad)
		}
	}
	q, err := r.Adopt(dup(), pid, held)
	_ = p.Close()
	if err != nil {
		t.Fatal(err)
	}
	if q.CgroupLeaf() != held.Cgroup {
		t.Fatalf("adopted in %q, want %q", q.CgroupLeaf(), held.Cgroup)
	}
	if u := r.Usage(); len(u) != 1 || u[0].Session != "adoptlea" {
		t.Errorf("usage of the adopted session: %+v", u)
	}
	q.Stop(100 * time.Millisecond)
	select {
	case <-q.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not finish")
	}
	if alive(escapee[0]) {
		t.Fatal("the setsid escapee outlived the stop of the adopted shell")
	}
	if alive(pid) {
		t.Fatal("the adopted shell outlived its stop")
	}
	if _, err := os.Stat(held.Cgroup); !os.IsNotExist(err) {
		t.Fatalf("leaf %s not removed: %v", held.Cgroup, err)
	}
}

func TestValidUnitName(t *testing.T) {
	for name, want := range map[string]bool{
		"tether-session-abc12345.service":   true,
		"tether-session-anon-2.service":     true,
		"tether-session-abc.scope":          false,
		"tether.service":                    false,
		"sshd.service":                      false,
		"tether-session-../x.service":       false,
		"tether-session-abcdefghi.service":  false,
		"tether-session-ab-1234.service":    false,
		"tether-session-ab.service\n":       false,
		"xtether-session-ab.service":        false,
		"tether-session-ab.service.service": false,
	} {
		if got := ValidUnitName(name); got != want {
			t.Errorf("ValidUnitName(%q) = %v", name, got)
		}
	}
}
