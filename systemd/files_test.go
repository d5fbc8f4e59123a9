// The tests here check the files tether ships for systemd: the
// default configuration loads cleanly, and the unit keeps the directives
// the daemon relies on, its sandbox, and none that would break file
// transfer or port forwarding.
// `systemd-analyze verify` and the exposure score are check.sh's job.
package systemd_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/config"
)

func TestDefaultConfigLoads(t *testing.T) {
	cfg, warnings, err := config.Load(config.LoadOptions{
		Path:         "tether.conf",
		FallbackPath: filepath.Join(t.TempDir(), "absent.conf"),
	})
	if err != nil {
		t.Fatalf("systemd/tether.conf does not load: %v", err)
	}
	if len(warnings) > 0 {
		t.Fatalf("systemd/tether.conf loads with warnings: %q", warnings)
	}
	if cfg.ShellCommand != "/bin/sh" || cfg.User != "tether-shell" {
		t.Errorf("shell %q as %q", cfg.ShellCommand, cfg.User)
	}
	if cfg.Metrics.Listen != "" {
		t.Errorf("metrics must be off by default, Listen = %q", cfg.Metrics.Listen)
	}
	if cfg.IdleTimeout() != 10*time.Minute {
		t.Errorf("idle timeout %v", cfg.IdleTimeout())
	}
}

// unit reads tether.service into section → key → values.
func unit(t *testing.T) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open("tether.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("tether.service: cannot parse %q", line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestUnitDirectives(t *testing.T) {
	u := unit(t)
	last := func(section, key string) string {
		vs := u[section][key]
		if len(vs) == 0 {
			return ""
		}
		return vs[len(vs)-1]
	}
	words := func(section, key string) map[string]bool {
		m := map[string]bool{}
		for _, v := range u[section][key] {
			for _, w := range strings.Fields(v) {
				m[w] = true
			}
		}
		return m
	}

	required := []struct{ section, key, want string }{
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "Restart", "always"},
		{"Service", "ExecStart", "/usr/bin/tether daemon"},
		{"Service", "KillMode", "mixed"},
		{"Install", "WantedBy", "multi-user.target"},
		{"Install", "Alias", "mender-connect.service"},
	}
	for _, r := range required {
		if got := last(r.section, r.key); got != r.want {
			t.Errorf("[%s] %s=%q, want %q", r.section, r.key, got, r.want)
		}
	}
	for _, key := range []string{"WatchdogSec", "RestartSec"} {
		d, err := time.ParseDuration(last("Service", key))
		if err != nil || d <= 0 {
			t.Errorf("%s=%q is not a positive duration", key, last("Service", key))
		}
	}
	for _, dep := range []string{"mender-authd.service", "network-online.target"} {
		if !words("Unit", "After")[dep] || !words("Unit", "Wants")[dep] {
			t.Errorf("the unit must be After= and Wants= %s", dep)
		}
	}
	if len(u["Unit"]["Requires"]) > 0 {
		t.Error("Requires= would stop tether with the auth service; use Wants=")
	}

	// The daemon is locked down (shells and the Mender client's commands
	// run in units of their own); these are what keep its exposure low.
	hardening := []struct{ key, want string }{
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"PrivateDevices", "yes"},
		{"PrivateIPC", "yes"},
		{"PrivateMounts", "yes"},
		{"ProtectKernelTunables", "yes"},
		{"ProtectKernelModules", "yes"},
		{"ProtectKernelLogs", "yes"},
		{"ProtectControlGroups", "yes"},
		{"ProtectClock", "yes"},
		{"ProtectHostname", "yes"},
		{"RestrictNamespaces", "yes"},
		{"RestrictRealtime", "yes"},
		{"RestrictSUIDSGID", "yes"},
		{"LockPersonality", "yes"},
		{"MemoryDenyWriteExecute", "yes"},
		{"SystemCallArchitectures", "native"},
		{"SystemCallFilter", "@system-service"},
		{"UMask", "0077"},
	}
	for _, h := range hardening {
		if got := last("Service", h.key); got != h.want {
			t.Errorf("%s=%q, want %q", h.key, got, h.want)
		}
	}
	// What the daemon itself needs, and nothing more privileged.
	caps := words("Service", "CapabilityBoundingSet")
	for _, c := range []string{"CAP_SETUID", "CAP_SETGID", "CAP_KILL"} {
		if !caps[c] {
			t.Errorf("CapabilityBoundingSet lacks %s (the identity switch, signals to the account's processes)", c)
		}
	}
	if len(caps) != 3 {
		t.Errorf("CapabilityBoundingSet=%v: more than the daemon needs", caps)
	}
	fams := words("Service", "RestrictAddressFamilies")
	for _, f := range []string{"AF_UNIX", "AF_INET", "AF_INET6"} {
		if !fams[f] {
			t.Errorf("RestrictAddressFamilies lacks %s (the bus, the server, forwarded ports)", f)
		}
	}
	rw := words("Service", "ReadWritePaths")
	for _, p := range []string{"-/run/utmp", "-/var/log/wtmp", "-/tmp"} {
		if !rw[p] {
			t.Errorf("ReadWritePaths lacks %s", p)
		}
	}
	// Uploads into /tmp and home directories, forwarded ports and the
	// identity switch need these left open.
	open := []struct{ key, allowed string }{
		{"PrivateTmp", "no"},
		{"ProtectHome", "no"},
		{"PrivateNetwork", ""},
		{"PrivateUsers", ""},
		{"DynamicUser", ""},
		{"IPAddressDeny", ""},
	}
	for _, o := range open {
		if got := last("Service", o.key); got != o.allowed {
			t.Errorf("%s=%s would break file transfer, port forwarding or the identity switch (want %q)", o.key, got, o.allowed)
		}
	}
	if u := last("Service", "User"); u != "" && u != "root" {
		t.Errorf("User=%s: the daemon must run as root (DBus auth service, shells as other users)", u)
	}
}
