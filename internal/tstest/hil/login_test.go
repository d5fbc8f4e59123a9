//go:build hil

package hiltests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// maxExposure is the most systemd-analyze security may say of the
// installed tether.service (systemd/check.sh bounds the offline figure
// the same way).
const maxExposure = 2.7

// TestSystemdLogin boots the systemd guest on its own (it installs a
// stand-in mender-update): remote sessions are logins of the device (who,
// last), the daemon is locked down (the exposure figure) and still does
// its work (a terminal, an upload, a port forward), and the Mender
// client's commands run in transient units outside its sandbox.
func TestSystemdLogin(t *testing.T) {
	forEachArch(t, "systemd", 10*time.Minute, loginSuite)
}

func loginSuite(r *rig) {
	var term *mockserver.Terminal
	r.steps(
		step{"connects", func() {
			r.waitConnected(5 * time.Minute)
			term = r.openLasting(admin)
		}},
		step{"who-and-last", func() { loginRecords(r, term) }},
		step{"exposure", func() { exposure(r, term) }},
		step{"upload", func() { lockedUpload(r, term) }},
		step{"port-forward", func() { lockedForward(r) }},
		step{"mender-client-unit", func() { menderInUnit(r, term) }},
	)
}

var ttyLine = regexp.MustCompile(`(?m)^tty=/dev/(pts/\d+)$`)

// loginRecords: a live session is in who's list with the remote user's
// id as its host; once it ended, last lists it with its logout.
func loginRecords(r *rig, term *mockserver.Terminal) {
	out := r.run(term, "journalctl --no-pager -b -t tether | grep 'login records' || true")
	if !strings.Contains(out, "utmp /run/utmp") || !strings.Contains(out, "wtmp /var/log/wtmp") {
		r.t.Fatalf("the daemon did not say it writes /run/utmp and /var/log/wtmp:\n%s", out)
	}
	s := r.open(alice)
	m := ttyLine.FindStringSubmatch(r.run(s, "echo tty=$(tty)"))
	if m == nil {
		r.t.Fatal("alice's shell has no pts")
	}
	line, host := m[1], "tether:"+mockserver.UserID(alice)
	who := r.run(term, "who")
	if !whoHas(who, line, host) {
		r.t.Fatalf("who does not list %s from %s:\n%s", line, host, who)
	}
	r.t.Logf("who:\n%s", who)
	if err := s.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.waitStop(s)
	r.eventually(30*time.Second, time.Second, "the logout in utmp and wtmp", func() error {
		if who := r.run(term, "who"); whoHas(who, line, host) {
			return fmt.Errorf("who still lists the ended session:\n%s", who)
		}
		last := r.run(term, "last -w -F")
		for _, l := range strings.Split(last, "\n") {
			f := strings.Fields(l)
			if len(f) > 3 && f[1] == line && f[2] == host && !strings.Contains(l, "still logged in") {
				r.t.Logf("last: %s", l)
				return nil
			}
		}
		return fmt.Errorf("last does not show the ended session on %s from %s:\n%s", line, host, last)
	})
}

func whoHas(who, line, host string) bool {
	for _, l := range strings.Split(who, "\n") {
		if strings.Contains(l, " "+line+" ") && strings.Contains(l, "("+host+")") {
			return true
		}
	}
	return false
}

var exposureRE = regexp.MustCompile(`Overall exposure level for tether.service: ([0-9.]+)`)

// exposure: systemd-analyze on the running unit, as installed.
func exposure(r *rig, term *mockserver.Terminal) {
	out := r.run(term, "systemd-analyze security --no-pager tether.service 2>&1 | tail -n 3")
	m := exposureRE.FindStringSubmatch(out)
	if m == nil {
		r.t.Fatalf("systemd-analyze security printed no exposure:\n%s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	r.t.Logf("systemd-analyze security tether.service: %s", m[1])
	r.extra = append(r.extra, "exposure="+m[1])
	if v > maxExposure {
		r.t.Fatalf("exposure %.1f, want at most %.1f", v, maxExposure)
	}
}

// lockedUpload: an upload lands where the unit allows writes; one into
// the read-only /usr is refused and leaves nothing.
func lockedUpload(r *rig, term *mockserver.Terminal) {
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	jwt, id := r.jwt(admin), r.dev.ID()
	if err := mockserver.UploadFile(ctx, r.url, jwt, id, "/tmp/hil-upload", "up", strings.NewReader("uploaded-42\n"), nil, nil); err != nil {
		r.t.Fatalf("upload into /tmp: %v", err)
	}
	if got := r.value(term, "content", "echo content=$(cat /tmp/hil-upload)"); got != "uploaded-42" {
		r.t.Fatalf("/tmp/hil-upload holds %q", got)
	}
	err := mockserver.UploadFile(ctx, r.url, jwt, id, "/usr/hil-denied", "x", strings.NewReader("x"), nil, nil)
	if err == nil {
		r.t.Fatal("an upload into /usr succeeded under ProtectSystem=strict")
	}
	r.t.Logf("upload into /usr refused: %v", err)
	if out := r.run(term, "ls /usr/ | grep hil || echo none"); !strings.Contains(out, "none") {
		r.t.Fatalf("the refused upload left %q", out)
	}
}

// lockedForward: a forwarded connection reaches a port on the device (the
// daemon's own metrics listener).
func lockedForward(r *rig) {
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	pf, err := mockserver.OpenPortForward(ctx, r.url, r.jwt(admin), r.dev.ID(), r.t.Logf)
	if err != nil {
		r.t.Fatalf("open a port forward: %v", err)
	}
	defer pf.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	defer l.Close()
	go pf.ServeTCP(l, "127.0.0.1", 9100)
	c, err := net.DialTimeout("tcp", l.Addr().String(), 10*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		r.t.Fatalf("through the forward: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("GET /healthz through the forward: %d %q", resp.StatusCode, body)
	}
	r.t.Logf("port forward to 127.0.0.1:9100 on the device: %s", resp.Status)
}

// menderInUnit: a stand-in mender-update (installed from outside the
// shell's sandbox, with systemd-run) records the cgroup it runs in; each
// command runs in a transient unit of its own, not in tether.service, and
// a failing one is reported with its exit status.
func menderInUnit(r *rig, term *mockserver.Terminal) {
	r.run(term, `printf '#!/bin/sh\ncat /proc/self/cgroup >/tmp/mender-$1\n[ "$1" = check-update ]\n' >/tmp/fake-mender`)
	r.run(term, "systemd-run --wait --quiet install -m 0755 /tmp/fake-mender /usr/bin/mender-update")
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	for _, cmd := range []string{mockserver.CommandCheckUpdate, mockserver.CommandSendInventory} {
		if err := mockserver.SendMenderCommand(ctx, r.url, r.jwt(admin), r.dev.ID(), cmd); err != nil {
			r.t.Fatalf("%s: %v", cmd, err)
		}
	}
	r.eventually(time.Minute, time.Second, "both commands ran", func() error {
		out := r.run(term, "cat /tmp/mender-check-update /tmp/mender-send-inventory 2>&1")
		if strings.Count(out, "tether-mender-") != 2 || strings.Contains(out, "tether.service") {
			return fmt.Errorf("the commands' cgroups:\n%s", out)
		}
		r.t.Logf("the commands' cgroups:\n%s", out)
		return nil
	})
	r.eventually(30*time.Second, time.Second, "the failure in the journal", func() error {
		out := r.run(term, "journalctl --no-pager -b -t tether -o verbose MESSAGE='mender client: command failed' | grep -E 'TETHER_(ERROR|COMMAND)=' || true")
		if !strings.Contains(out, "TETHER_ERROR=exit status 1") || !strings.Contains(out, "TETHER_COMMAND=send-inventory") {
			return fmt.Errorf("no failed send-inventory with its exit status in:\n%s", out)
		}
		return nil
	})
	if out := r.run(term, "systemctl list-units --all --no-legend 'tether-mender-*' | wc -l"); strings.TrimSpace(out) != "0" {
		r.t.Errorf("units left behind: %s", out)
	}
}
