//go:build hil

package hiltests

import (
	"fmt"
	"strings"
	"time"
)

// restartSteps are the systemd guest's restart steps (issue 28), run by
// TestSystemd on its booted guest after the watchdog step (one boot less
// per architecture): each shell is in a unit of its own (issue 27),
// outside tether.service's cgroup, so a restart, a replaced binary and a
// crash keep it, in its unit.
func restartSteps(r *rig) []step {
	return []step{
		step{"systemctl-restart", func() {
			keepsShell(r, "systemctl restart tether", "systemctl restart", "61", 0)
		}},
		step{"binary-replaced", func() {
			// A different build, as an OTA update would install:
			// the same program with other bytes (the guest cannot
			// build), installed by rename over the running one.
			keepsShell(r, "cp /usr/bin/tether /usr/bin/.tether.new && printf 'ota' >>/usr/bin/.tether.new && "+
				"mv /usr/bin/.tether.new /usr/bin/tether && systemctl restart tether", "a replaced binary", "62", 0)
		}},
		step{"kill-abrt", func() {
			keepsShell(r, "kill -ABRT $(systemctl show -P MainPID tether.service)", "kill -ABRT", "63", 10)
		}},
		step{"systemctl-stop", func() { stopEndsSessions(r) }},
	}
}

// stopEndsSessions: systemctl stop ends every session on purpose; the
// next start finds nothing to restore.
func stopEndsSessions(r *rig) {
	term := r.open(admin)
	pid := r.value(term, "pid", `echo "pid=$$"`)
	other := r.open(alice)
	fmt.Fprintf(other, "systemd-run --on-active=5 systemctl start tether; systemctl stop tether\n")
	r.waitReconnect(4*time.Minute, "systemctl stop and start")
	check := r.open(admin)
	if out := r.run(check, "echo pid=$$"); strings.Contains(out, "reattached to the shell") {
		r.t.Fatalf("a session survived systemctl stop: %q", out)
	}
	if left := r.value(check, "left", fmt.Sprintf(`[ -d /proc/%s ] && echo left=yes || echo left=no`, pid)); left != "no" {
		r.t.Fatalf("shell %s outlived systemctl stop", pid)
	}
	out := r.run(check, "journalctl --no-pager -u tether.service -o cat | grep -E 'restored|restore_dropped' || true")
	r.t.Logf("restore lines after the stop:\n%s", out)
}
