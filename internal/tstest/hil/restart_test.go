//go:build hil

package hiltests

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Restart without losing a shell (issue 28). In the minimal guest (no
// systemd): `tether upgrade PATH` execs the binary in place, same pid, the
// pty masters inherited, each shell still in its cgroup leaf. The systemd
// guest's steps (systemctl restart, a replaced binary, kill -ABRT,
// systemctl stop) are in restart_systemd_test.go, run by TestSystemd on
// its booted guest: each shell is in a unit of its own (issue 27),
// outside the service's cgroup.

// TestMinimalUpgrade boots the minimal guest of each architecture and
// upgrades tether under a counting shell.
func TestMinimalUpgrade(t *testing.T) {
	forEachArch(t, "minimal", 8*time.Minute, func(r *rig) {
		r.steps(
			step{"connects", func() { r.waitConnected(3 * time.Minute) }},
			step{"tether-upgrade", func() {
				keepsShell(r, "tether upgrade /usr/bin/tether", "the upgrade", "51", 0)
				// Admin's counting shell and alice's, which ran the upgrade.
				if log := r.g.serial.String(); !strings.Contains(log, "restored 2 sessions from the previous run") {
					r.t.Errorf("the guest's log has no restore line for both shells")
				}
			}},
		)
	})
}

var hilTickRE = regexp.MustCompile(`tick (\d+)\r?\n`)

func hilTicks(s string) []int {
	var out []int
	for _, m := range hilTickRE.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// keepsShell opens a shell as admin, starts a counter job in it and two
// processes that leave its terminal session (setsid, a double fork), has
// trigger run on the device (from another user's terminal, in the
// background: the daemon goes away under it), waits for the device to
// come back, and reopens admin's terminal: the same shell, the job still
// counting, every tick since the last one seen delivered. Then it stops
// the session: the restored session keeps its unit or cgroup leaf, so the
// escapees end with it. tag makes the escapees' command lines unique.
// lost is how many ticks may go missing: after a planned restart none
// (the old run hands its replay buffer over), after a crash what the
// dying daemon had read from the pty but not yet delivered, which died
// with it (a tick is 0.2 s; 10 is 2 s of output).
func keepsShell(r *rig, trigger, why, tag string, lost int) {
	r.t.Helper()
	term := r.open(admin)
	pid := r.value(term, "pid", `echo "pid=$$"`)
	other := r.open(alice)
	cmds := r.escapees(term, other, tag)
	r.run(term, "stty -echo")
	fmt.Fprintf(term, "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done &\n")
	ctx, cancel := context.WithTimeout(r.ctx, cmdTimeout)
	out, err := term.Expect(ctx, "tick 5\r\n")
	cancel()
	if err != nil {
		r.t.Fatalf("the counter did not start: %v %q", err, out)
	}
	seen := hilTicks(out)
	last := seen[len(seen)-1]

	fmt.Fprintf(other, "(sleep 1; %s) >/dev/null 2>&1 </dev/null &\n", trigger)
	took := r.waitReconnect(4*time.Minute, why)
	r.t.Logf("device back %v after %s", round(took), why)
	r.extra = append(r.extra, strings.ReplaceAll(why, " ", "_")+"_reconnect="+round(took))
	// Whatever the old terminal got until its link went: after a crash
	// no replay buffer is handed over, and what the old run delivered is
	// not in the pty any more.
	ctx, cancel = context.WithTimeout(r.ctx, 10*time.Second)
	rest, _ := term.Expect(ctx, "\x00never printed")
	cancel()
	if more := hilTicks(rest); len(more) > 0 {
		last = more[len(more)-1]
	}
	term.Close()
	other.Close()

	a, err := r.tryOpen(admin)
	if err != nil {
		r.t.Fatalf("reopen admin's terminal: %v", err)
	}
	ctx, cancel = context.WithTimeout(r.ctx, cmdTimeout)
	replay, err := a.Expect(ctx, "tick "+strconv.Itoa(last+15)+"\r\n")
	cancel()
	if err != nil {
		r.t.Fatalf("the reopened terminal: %v; got %q", err, replay)
	}
	if !strings.Contains(replay, "reattached to the shell started at") {
		r.t.Fatalf("not reattached after %s: %q", why, replay)
	}
	got := hilTicks(replay)
	if len(got) == 0 || got[0] > last+1+lost {
		r.t.Fatalf("ticks after %s start at %v, want at most %d", why, got, last+1+lost)
	}
	if got[0] > last+1 {
		r.t.Logf("%d ticks lost across %s (the dying daemon held them)", got[0]-last-1, why)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			r.t.Fatalf("ticks missed across %s: %d then %d", why, got[i-1], got[i])
		}
	}
	if p := r.value(a, "pid", `echo "pid=$$"`); p != pid {
		r.t.Fatalf("after %s the terminal reaches shell %s, want %s", why, p, pid)
	}
	// Alice's shell, which ran the trigger, was kept too: this reattaches.
	check, err := r.tryOpen(alice)
	if err != nil {
		r.t.Fatalf("reopen alice's terminal: %v", err)
	}
	took = r.stopKillsEscapees(a, check, cmds)
	r.t.Logf("stop of the session kept across %s: escapees gone %v after it", why, round(took))
	r.extra = append(r.extra, strings.ReplaceAll(why, " ", "_")+"_stop_escapees="+round(took))
	check.Close()
}
