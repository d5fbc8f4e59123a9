package config

import (
	"strings"
	"testing"
	"time"
)

func TestValidateProtocols(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"allow list", func(c *Config) {
			c.PortForward.Allow = []string{"tcp/127.0.0.0/8:*", "[::1]:22", "localhost:8000-8080"}
		}, ""},
		{"empty allow list", func(c *Config) { c.PortForward.Allow = []string{} }, ""},
		{"bad rule", func(c *Config) { c.PortForward.Allow = []string{"tcp/127.0.0.1"} }, "PortForward.Allow"},
		{"bad port range", func(c *Config) { c.PortForward.Allow = []string{"127.0.0.1:9-1"} }, "PortForward.Allow"},
		{"window", func(c *Config) { c.PortForward.Window = 17 }, "PortForward.Window"},
		{"read size", func(c *Config) { c.PortForward.ReadSize = 100 }, "PortForward.ReadSize"},
		{"per session over total", func(c *Config) { c.PortForward.MaxConnections = c.PortForward.MaxTotal + 1 }, "PortForward.MaxConnections"},
		{"dial timeout", func(c *Config) { c.PortForward.DialTimeout = 0 }, "PortForward.DialTimeout"},
		{"relative binary", func(c *Config) { c.MenderClient.Binaries = []string{"mender"} }, "MenderClient.Binaries"},
		{"no binary", func(c *Config) { c.MenderClient.Binaries = nil }, "MenderClient.Binaries"},
		{"timeout", func(c *Config) { c.MenderClient.Timeout = Duration(time.Millisecond) }, "MenderClient.Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(c)
			var msgs []string
			c.validateProtocols(func(key, format string, args ...any) { msgs = append(msgs, key) })
			got := strings.Join(msgs, ",")
			if (tc.want == "" && got != "") || (tc.want != "" && !strings.Contains(got, tc.want)) {
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
		})
	}
}

// Upstream has no connection limit; the defaults must let through what a
// browser on the device's web UI or a parallel download opens.
func TestPortForwardDefaultLimits(t *testing.T) {
	pf := Default().PortForward
	if pf.MaxConnections < 128 || pf.MaxTotal < 256 {
		t.Fatalf("PortForward.MaxConnections %d, MaxTotal %d: want at least 128 and 256", pf.MaxConnections, pf.MaxTotal)
	}
}
