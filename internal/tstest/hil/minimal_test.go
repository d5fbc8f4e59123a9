//go:build hil

package hiltests

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestMinimal boots the busybox guest of each architecture: Debian kernel,
// busybox-static /init, Debian's dbus-daemon, mock-authd on the system bus
// authenticating against the host's mock server, and tether.
func TestMinimal(t *testing.T) {
	forEachArch(t, "minimal", 8*time.Minute, minimalSuite)
}

func minimalSuite(r *rig) {
	r.steps(
		step{"connects", func() {
			r.waitConnected(3 * time.Minute)
		}},
		step{"uname", func() {
			term := r.open(admin)
			out := r.run(term, "uname -m")
			if strings.TrimSpace(out) != r.spec.Uname {
				r.t.Fatalf("uname -m on the %s guest printed %q, want %q", r.spec.Arch, out, r.spec.Uname)
			}
			r.rss = r.rssOf(term, "pidof tether")
			r.t.Logf("tether RSS in the %s minimal guest: %s", r.spec.Arch, r.rss)
		}},
		step{"resize", func() {
			term := r.open(admin)
			if got := r.value(term, "size", `echo "size=$(stty size)"`); got != "24 80" {
				r.t.Fatalf("stty size before resize = %q, want \"24 80\"", got)
			}
			if err := term.Resize(132, 43); err != nil {
				r.t.Fatal(err)
			}
			r.eventually(30*time.Second, 200*time.Millisecond, "stty size after resize", func() error {
				if got := r.value(term, "size", `echo "size=$(stty size)"`); got != "43 132" {
					return fmt.Errorf("stty size = %q, want \"43 132\"", got)
				}
				return nil
			})
		}},
		step{"per-user-limit", func() {
			// The guest allows one session per user (qemu/minimal/tether.conf).
			first := r.open(admin)
			_, err := r.tryOpen(admin)
			msg, isShellErr := shellError(err)
			if !isShellErr || msg != "user has too many open sessions" {
				r.t.Fatalf("second session of the same user: got %v, want the refusal \"user has too many open sessions\"", err)
			}
			// Another user is not affected, and the first session still works.
			other := r.open(alice)
			r.run(other, "echo other-user")
			r.run(first, "echo first-still-works")
		}},
		step{"stop-leaves-nothing", func() {
			stopLeavesNothing(r)
		}},
		step{"session-cgroups", func() {
			unitsMinimal(r)
		}},
		step{"token-rotation", func() {
			term := r.open(admin)
			old := r.dev
			// SIGUSR1 makes mock-authd fetch a new token and announce it
			// with JwtTokenStateChange; tether must reconnect with it.
			fmt.Fprintf(term, "kill -USR1 $(pidof mock-authd)\n")
			took := r.waitReconnect(2*time.Minute, "the token rotation")
			if r.dev.Token() == old.Token() {
				r.t.Fatalf("device reconnected with its old token")
			}
			r.t.Logf("reconnected with the rotated token %v after the rotation", round(took))
			r.extra = append(r.extra, "rotation_reconnect="+round(took))
			r.run(r.open(rotation), "echo after-rotation")
		}},
		step{"server-restart", func() {
			r.restartServer()
			took := r.waitDeviceOnNewServer(2 * time.Minute)
			r.t.Logf("reconnected %v after the server restart", round(took))
			r.extra = append(r.extra, "restart_reconnect="+round(took))
			r.run(r.open(restart), "echo after-restart")
		}},
	)
}

// stopLeavesNothing starts a shell with a background job and a child that
// ignores SIGHUP, stops the session from the server side, and checks from
// a new session that the shell, its job and the child are gone.
func stopLeavesNothing(r *rig) {
	term := r.open(admin)
	pids := r.value(term, "pids",
		`sleep 3117 & a=$!; (trap "" HUP; exec sleep 3119) & b=$!; echo "pids=$$ $a $b"`)
	if len(strings.Fields(pids)) != 3 {
		r.t.Fatalf("expected three pids, got %q", pids)
	}
	if err := term.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.waitStop(term)
	check := r.open(admin)
	r.eventually(30*time.Second, time.Second, "processes of the stopped session gone", func() error {
		left := r.value(check, "left", fmt.Sprintf(
			`l=""; for p in %s; do [ -d /proc/$p ] && l="$l $p:$(cat /proc/$p/comm)"; done; echo "left=$l"`, pids))
		if left != "" {
			return fmt.Errorf("still running after stop: %s", left)
		}
		return nil
	})
	// Nothing of the session is left anywhere either (by command line).
	if out := r.run(check, `ps -o pid,args 2>/dev/null | grep '[s]leep 311' || ps | grep '[s]leep 311' || true`); strings.Contains(out, "sleep 311") {
		r.t.Fatalf("a sleep of the stopped session survived:\n%s", out)
	}
}
