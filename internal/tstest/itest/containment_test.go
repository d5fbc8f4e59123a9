package itest

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A process that left the shell's terminal session (setsid), and one that
// did so after a double fork and ignores HUP and TERM, end with the
// session when the daemon contains it in a cgroup (or unit), whose
// directory is gone afterwards; the process-group fallback, logged as
// such, cannot find them.
func TestStopEndsSetsidEscapees(t *testing.T) {
	tests := []struct {
		mode string
		n    int
	}{
		{"auto", 1},
		{"process-group", 2},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			e := newEnv(t, map[string]interface{}{"Sessions": map[string]interface{}{"StopGrace": "200ms", "Containment": tt.mode}})
			e.waitDevice()
			term := e.open(adminEmail)
			a, b := fmt.Sprintf("sleep 32%d1", tt.n), fmt.Sprintf("sleep 32%d2", tt.n)
			e.run(term, fmt.Sprintf("setsid %s & (setsid sh -c 'trap \"\" HUP TERM; %s & wait' &); echo started", a, b))
			eventually(t, 5*time.Second, "escapees running", func() bool { return processExists(a) && processExists(b) })
			t.Cleanup(func() { killAll(a); killAll(b) })
			logged := e.log.String()
			m := regexp.MustCompile(`msg="session containment" containment=(\S+)`).FindStringSubmatch(logged)
			if m == nil {
				t.Fatalf("the daemon did not log its containment:\n%s", logged)
			}
			mode := m[1]
			if tt.mode == "process-group" && mode != "process-group" {
				t.Fatalf("Containment process-group gave %s", mode)
			}
			var dir string
			if d := regexp.MustCompile(`msg="session opened".* containment=(/\S+)`).FindStringSubmatch(logged); d != nil {
				dir = d[1]
				if _, err := os.Stat(dir); err != nil {
					t.Fatalf("session cgroup %s: %v", dir, err)
				}
			}
			begin := time.Now()
			if err := term.Stop(); err != nil {
				t.Fatal(err)
			}
			e.waitStop(term)
			if mode == "process-group" {
				// The limitation the fallback states in its log line.
				time.Sleep(500 * time.Millisecond)
				if !processExists(a) || !processExists(b) {
					t.Fatal("the process-group teardown found a process outside its session")
				}
				if !strings.Contains(logged, "setsid is not found") {
					t.Errorf("the fallback's log line does not say what it cannot do")
				}
				return
			}
			eventually(t, 5*time.Second, "escapees gone", func() bool { return !processExists(a) && !processExists(b) })
			t.Logf("%s: escapees gone %v after the stop", mode, time.Since(begin).Round(time.Millisecond))
			if dir != "" {
				eventually(t, 5*time.Second, "session cgroup removed", func() bool { _, err := os.Stat(dir); return os.IsNotExist(err) })
			}
		})
	}
}

// killAll kills the processes whose command line holds s.
func killAll(s string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			var pid int
			if _, err := fmt.Sscan(e.Name(), &pid); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}
