//go:build hil

package hiltests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// TestSystemd boots the Debian systemd guest of each architecture: tether
// installed from systemd/ (unit, default configuration) plus a drop-in
// with the test's settings, mock-authd as a DBus service standing in for
// mender-authd.
func TestSystemd(t *testing.T) {
	forEachArch(t, "systemd", 12*time.Minute, systemdSuite)
}

func systemdSuite(r *rig) {
	var term *mockserver.Terminal
	r.steps(append([]step{
		step{"connects", func() {
			r.waitConnected(5 * time.Minute)
		}},
		step{"unit-ready", func() {
			term = r.openLasting(admin)
			if out := strings.TrimSpace(r.run(term, "uname -m")); out != r.spec.Uname {
				r.t.Fatalf("uname -m on the %s guest printed %q, want %q", r.spec.Arch, out, r.spec.Uname)
			}
			u := r.unit(term)
			// Type=notify: the unit is only "active" once the daemon sent
			// READY=1.
			for k, want := range map[string]string{
				"Type": "notify", "ActiveState": "active", "SubState": "running", "NRestarts": "0",
			} {
				if u[k] != want {
					r.t.Errorf("tether.service %s=%q, want %q", k, u[k], want)
				}
			}
			// Where the package puts it (bookworm's systemd names it by
			// /lib, which is /usr/lib on a merged-/usr system).
			if !strings.HasSuffix(u["FragmentPath"], "/lib/systemd/system/tether.service") {
				r.t.Errorf("tether.service loaded from %q, not from the package's place", u["FragmentPath"])
			}
			if !strings.Contains(u["DropInPaths"], "/etc/systemd/system/tether.service.d/hil.conf") {
				r.t.Errorf("tether.service runs without the test's drop-in: DropInPaths=%q", u["DropInPaths"])
			}
			// The watchdog step needs the package's watchdog.
			if w := u["WatchdogUSec"]; w == "" || w == "0" || w == "infinity" {
				r.t.Errorf("tether.service has no watchdog: WatchdogUSec=%q", w)
			}
			r.t.Logf("tether.service: %s, watchdog %s; status %q", u["ActiveState"], u["WatchdogUSec"], u["StatusText"])
			boot := r.value(term, "multiuser", `echo "multiuser=$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)"`)
			if us, err := strconv.ParseInt(boot, 10, 64); err == nil && us > 0 {
				d := time.Duration(us) * time.Microsecond
				r.t.Logf("guest reached multi-user.target %v after the kernel started", round(d))
				r.extra = append(r.extra, "guest_multi_user="+round(d))
			}
			if out := r.run(term, "systemd-analyze time; systemd-analyze blame --no-pager | head -n 8"); strings.Contains(out, "Startup finished") {
				r.t.Logf("systemd-analyze in the guest:\n%s", out)
			}
			r.rss = r.rssOf(term, "systemctl show -P MainPID tether.service")
			r.t.Logf("tether RSS in the %s systemd guest: %s", r.spec.Arch, r.rss)
		}},
		step{"journal-fields", func() {
			journalFields(r, term)
		}},
		step{"metrics", func() {
			metricsCounts(r)
		}},
		step{"session-units", func() {
			unitsSystemd(r, term)
		}},
		step{"watchdog", func() {
			watchdogRestart(r, term)
		}},
	}, restartSteps(r)...)...)
}

// unit reads the properties of tether.service the checks look at.
func (r *rig) unit(term *mockserver.Terminal) map[string]string {
	r.t.Helper()
	out := r.run(term, "systemctl show tether.service --no-pager "+
		"-p Type -p ActiveState -p SubState -p NRestarts -p Result -p MainPID -p StatusText "+
		"-p FragmentPath -p DropInPaths -p WatchdogUSec")
	props := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			props[k] = v
		}
	}
	if props["ActiveState"] == "" {
		r.t.Fatalf("systemctl show printed no properties: %q", out)
	}
	return props
}

// journalFields opens and closes a session and reads tether's journal
// entries about it by their structured fields.
func journalFields(r *rig, term *mockserver.Terminal) {
	s := r.open(alice)
	r.run(s, "echo journal-check")
	sid := s.SID()
	if sid == "" {
		r.t.Fatal("the terminal learnt no session id")
	}
	if err := s.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.waitStop(s)
	userID := mockserver.UserID(alice)
	for _, tc := range []struct{ event, want string }{
		{"session_open", "TETHER_USER_ID=" + userID},
		{"session_close", "TETHER_REASON="},
	} {
		cmd := fmt.Sprintf("journalctl --no-pager -o verbose -t tether TETHER_EVENT=%s TETHER_SESSION_ID=%s", tc.event, sid)
		r.eventually(30*time.Second, time.Second, "journal entry "+tc.event, func() error {
			out := r.run(term, cmd)
			for _, want := range []string{"TETHER_EVENT=" + tc.event, "TETHER_SESSION_ID=" + sid, tc.want, "SYSLOG_IDENTIFIER=tether"} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("%s: no %q in:\n%s", cmd, want, out)
				}
			}
			return nil
		})
	}
	r.t.Logf("journal has session_open and session_close with TETHER_SESSION_ID=%s", sid)
}

// scrape reads the daemon's metrics through QEMU's port forward.
func (r *rig) scrape(path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", r.g.metricsPort, path), nil)
	if err != nil {
		return 0, "", err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}

// metric returns the value of one series ("name{labels}" exactly as
// exposed) from a Prometheus text exposition.
func metric(exposition, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

const activeShells = `tether_sessions_active{proto="shell"}`

// metricsCounts checks the session counts the metrics endpoint reports
// while sessions open and close.
func metricsCounts(r *rig) {
	code, body, err := r.scrape("/healthz")
	if err != nil || code != http.StatusOK {
		r.t.Fatalf("/healthz: %d %q %v", code, body, err)
	}
	expect := func(want map[string]float64) {
		r.eventually(30*time.Second, 500*time.Millisecond, "metrics", func() error {
			code, body, err := r.scrape("/metrics")
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("/metrics: %d %v", code, err)
			}
			for series, w := range want {
				got, ok := metric(body, series)
				if !ok {
					return fmt.Errorf("no series %s", series)
				}
				if got != w {
					return fmt.Errorf("%s = %v, want %v", series, got, w)
				}
			}
			return nil
		})
	}
	// The admin session of the earlier steps is open.
	opened := func() float64 {
		_, body, _ := r.scrape("/metrics")
		v, _ := metric(body, `tether_sessions_opened_total{proto="shell"}`)
		return v
	}
	expect(map[string]float64{activeShells: 1, "tether_link_up": 1})
	before := opened()
	s := r.open(alice)
	expect(map[string]float64{activeShells: 2, `tether_sessions_opened_total{proto="shell"}`: before + 1})
	if err := s.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.waitStop(s)
	expect(map[string]float64{activeShells: 1})
	_, body, _ = r.scrape("/metrics")
	if rss, ok := metric(body, "process_resident_memory_bytes"); ok {
		r.t.Logf("metrics: process_resident_memory_bytes = %.1f MiB", rss/(1<<20))
		r.extra = append(r.extra, fmt.Sprintf("metrics_rss=%.1fMiB", rss/(1<<20)))
	}
	// Both sessions the steps stopped from the user's side.
	if v, _ := metric(body, `tether_sessions_closed_total{proto="shell",reason="stop"}`); v < 2 {
		r.t.Errorf(`tether_sessions_closed_total{reason="stop"} = %v, want at least 2`, v)
	}
}

// watchdogRestart wedges the daemon with SIGSTOP from its own shell and
// expects systemd's watchdog to kill it, systemd to restart it and the
// device to come back.
func watchdogRestart(r *rig, term *mockserver.Terminal) {
	start := time.Now()
	fmt.Fprintf(term, "kill -STOP $(systemctl show -P MainPID tether.service)\n")
	// Bounded by the unit's WatchdogSec and RestartSec, and a restart.
	took := r.waitReconnect(4*time.Minute, "SIGSTOP of the daemon")
	r.t.Logf("device back %v after the daemon was stopped", round(took))
	r.extra = append(r.extra, "watchdog_reconnect="+round(time.Since(start)))
	check := r.open(watchdog)
	u := r.unit(check)
	if u["ActiveState"] != "active" || u["NRestarts"] != "1" {
		r.t.Errorf("after the watchdog: ActiveState=%q NRestarts=%q, want active and 1", u["ActiveState"], u["NRestarts"])
	}
	out := r.run(check, "journalctl --no-pager -u tether.service | grep -E 'Watchdog timeout|result .watchdog' || true")
	if !strings.Contains(out, "Watchdog timeout") || !strings.Contains(out, "watchdog") {
		r.t.Errorf("the journal does not show a watchdog kill:\n%s", out)
	}
	code, _, err := r.scrape("/healthz")
	if err != nil || code != http.StatusOK {
		r.t.Errorf("/healthz after the restart: %d %v", code, err)
	}
}
