//go:build hil && hilrestart

package hiltests

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The systemd guest's restart tests (issue 28). They need issue 27: each
// shell in a unit of its own, outside tether.service's cgroup. Until that
// is merged systemd kills the shells with the service (KillMode=mixed), the
// daemon therefore ends them on purpose at a restart, and these tests
// fail; hence the extra tag: go test -tags 'hil hilrestart' -run
// TestSystemdRestart ./internal/tstest/hil/.
func TestSystemdRestart(t *testing.T) {
	forEachArch(t, "systemd", 15*time.Minute, func(r *rig) {
		r.steps(
			step{"connects", func() { r.waitConnected(5 * time.Minute) }},
			step{"systemctl-restart", func() {
				keepsShell(r, "systemctl restart tether", "systemctl restart")
			}},
			step{"binary-replaced", func() {
				// A different build, as an OTA update would install:
				// the same program with other bytes (the guest cannot
				// build), installed by rename over the running one.
				keepsShell(r, "cp /usr/bin/tether /usr/bin/.tether.new && printf 'ota' >>/usr/bin/.tether.new && "+
					"mv /usr/bin/.tether.new /usr/bin/tether && systemctl restart tether", "a replaced binary")
			}},
			step{"kill-abrt", func() {
				keepsShell(r, "kill -ABRT $(systemctl show -P MainPID tether.service)", "kill -ABRT")
			}},
			step{"systemctl-stop", func() { stopEndsSessions(r) }},
		)
	})
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
