// The tests here check the files tether ships for systemd: the
// default configuration loads cleanly, and the unit keeps the directives
// the daemon relies on and none that would break remote administration.
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

	// Shells inherit the sandbox: these would stop a remote shell from
	// administering the device.
	breaking := []struct{ key, allowed string }{
		{"ProtectSystem", "no"},
		{"ProtectHome", "no"},
		{"PrivateTmp", "no"},
		{"NoNewPrivileges", "no"},
		{"PrivateDevices", ""},
		{"PrivateNetwork", ""},
		{"PrivateUsers", ""},
		{"ProtectKernelTunables", ""},
		{"ProtectKernelModules", ""},
		{"ProtectControlGroups", ""},
		{"ProtectClock", ""},
		{"ProtectHostname", ""},
		{"ProtectProc", ""},
		{"ProcSubset", ""},
		{"RestrictSUIDSGID", ""},
		{"RestrictNamespaces", ""},
		{"RestrictAddressFamilies", ""},
		{"CapabilityBoundingSet", ""},
		{"MemoryDenyWriteExecute", ""},
		{"DynamicUser", ""},
		{"ReadOnlyPaths", ""},
		{"InaccessiblePaths", ""},
	}
	for _, b := range breaking {
		if got := last("Service", b.key); got != b.allowed {
			t.Errorf("%s=%s would break remote administration from tether's shells (want %q)", b.key, got, b.allowed)
		}
	}
	if u := last("Service", "User"); u != "" && u != "root" {
		t.Errorf("User=%s: the daemon must run as root (DBus auth service, shells as other users)", u)
	}
}
