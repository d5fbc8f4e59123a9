package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validConfig is the defaults plus a user, which passes Validate.
func validConfig() *Config {
	c := Default()
	c.User = "nobody"
	c.normalize()
	return c
}

func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tether test CA"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IsCA:         true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestValidate(t *testing.T) {
	t.Parallel()
	shells := shellsFile(t)
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", "jwt")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := writeFile(t, dir, "not.pem", "hello")
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // nil: valid
	}{
		{"defaults with a user", func(c *Config) {}, nil},
		{"user required", func(c *Config) { c.User = "" }, []string{"User: required (set it in the configuration file or TETHER_USER)"}},
		{"lang with =", func(c *Config) { c.Lang = "LANG=C" }, []string{`Lang: "LANG=C" contains '=' or a control character`}},
		{"lang empty is fine", func(c *Config) { c.Lang = "" }, nil},

		{"MaxTotal 0", func(c *Config) { c.Sessions.MaxTotal = 0 }, []string{"Sessions.MaxTotal: 0 is out of range (allowed 1..1024)"}},
		{"MaxTotal 1025", func(c *Config) { c.Sessions.MaxTotal = 1025 }, []string{"Sessions.MaxTotal: 1025 is out of range (allowed 1..1024)"}},
		{"MaxTotal bounds", func(c *Config) { c.Sessions.MaxTotal, c.Sessions.MaxPerUser = 1024, 1024 }, nil},
		{"MaxPerUser above MaxTotal", func(c *Config) { c.Sessions.MaxPerUser = 17 }, []string{"Sessions.MaxPerUser: 17 is larger than Sessions.MaxTotal (16)"}},
		{"StopGrace low", func(c *Config) { c.Sessions.StopGrace = Duration(5 * time.Millisecond) }, []string{"Sessions.StopGrace: 5ms is out of range (allowed 10ms..1m)"}},
		{"StopGrace high", func(c *Config) { c.Sessions.StopGrace = Duration(61 * time.Second) }, []string{"Sessions.StopGrace: 1m1s is out of range (allowed 10ms..1m)"}},
		{"StopGrace bounds", func(c *Config) { c.Sessions.StopGrace = Duration(10 * time.Millisecond) }, nil},
		{"session ping low", func(c *Config) { c.Sessions.PingInterval = Duration(50 * time.Millisecond) }, []string{"Sessions.PingInterval: 50ms is out of range (allowed 100ms..1h)"}},
		{"session ping high", func(c *Config) {
			c.Sessions.PingInterval, c.Sessions.PongTimeout = Duration(2*time.Hour), Duration(3*time.Hour)
		}, []string{"Sessions.PingInterval: 2h is out of range (allowed 100ms..1h)"}},
		{"pong not above ping", func(c *Config) { c.Sessions.PongTimeout = c.Sessions.PingInterval }, []string{"Sessions.PongTimeout: 1m must be greater than Sessions.PingInterval (1m)"}},
		{"pong above 24h", func(c *Config) { c.Sessions.PongTimeout = Duration(25 * time.Hour) }, []string{"Sessions.PongTimeout: 25h is out of range (at most 24h)"}},
		{"detached timeout off", func(c *Config) { c.Sessions.DetachedTimeout = 0 }, nil},
		{"detached timeout high", func(c *Config) { c.Sessions.DetachedTimeout = Duration(25 * time.Hour) }, []string{"Sessions.DetachedTimeout: 25h is out of range (allowed 0s..24h)"}},
		{"probe grace low", func(c *Config) { c.Sessions.ProbeGrace = Duration(50 * time.Millisecond) }, []string{"Sessions.ProbeGrace: 50ms is out of range (allowed 100ms..30s)"}},
		{"probe grace high", func(c *Config) { c.Sessions.ProbeGrace = Duration(time.Minute) }, []string{"Sessions.ProbeGrace: 1m is out of range (allowed 100ms..30s)"}},
		{"replay buffer off", func(c *Config) { c.Sessions.ReplayBuffer = 0 }, nil},
		{"replay buffer high", func(c *Config) { c.Sessions.ReplayBuffer = 4<<20 + 1 }, []string{"Sessions.ReplayBuffer: 4194305 is out of range (allowed 0..4194304)"}},

		{"server URL scheme", func(c *Config) { c.Auth.Source, c.ServerURL, c.Auth.Token = AuthSourceStatic, "ftp://example.com", "t" }, []string{`ServerURL: "ftp://example.com" must be an http, https, ws or wss URL with a host`}},
		{"server URL no host", func(c *Config) { c.Auth.Source, c.ServerURL, c.Auth.Token = AuthSourceStatic, "hosted.mender.io", "t" }, []string{`ServerURL: "hosted.mender.io" must be`}},
		{"server URL ok", func(c *Config) {
			c.Auth.Source, c.ServerURL, c.Auth.Token = AuthSourceStatic, "wss://127.0.0.1:8443/prefix", "t"
		}, nil},
		// Upstream's deprecated ServerURL means nothing with the dbus source.
		{"server URL unread with dbus", func(c *Config) { c.ServerURL = "hosted.mender.io" }, nil},
		{"CA file missing", func(c *Config) { c.Link.CAFile = missing }, []string{"Link.CAFile: open " + missing}},
		{"CA file not PEM", func(c *Config) { c.Link.CAFile = notPEM }, []string{"Link.CAFile: " + notPEM + " contains no PEM certificate"}},
		{"CA file ok", func(c *Config) { c.Link.CAFile = caFile }, nil},

		{"auth source unknown", func(c *Config) { c.Auth.Source = "ldap" }, []string{`Auth.Source: "ldap" is not allowed (allowed: dbus, static)`}},
		{"static without URL or token", func(c *Config) { c.Auth.Source = AuthSourceStatic }, []string{
			`ServerURL: required when Auth.Source is "static"`,
			`Auth.TokenFile: Auth.TokenFile or Auth.Token (TETHER_AUTH_TOKEN) is required when Auth.Source is "static"`,
		}},
		{"static with both tokens", func(c *Config) {
			c.Auth.Source, c.ServerURL, c.Auth.Token, c.Auth.TokenFile = AuthSourceStatic, "https://s", "t", tokenFile
		}, []string{"Auth.Token: set only one of Auth.Token and Auth.TokenFile"}},
		{"static with missing token file", func(c *Config) {
			c.Auth.Source, c.ServerURL, c.Auth.TokenFile = AuthSourceStatic, "https://s", missing
		}, []string{"Auth.TokenFile: open " + missing}},
		{"static with token", func(c *Config) { c.Auth.Source, c.ServerURL, c.Auth.Token = AuthSourceStatic, "https://s", "t" }, nil},
		{"static with token file", func(c *Config) {
			c.Auth.Source, c.ServerURL, c.Auth.TokenFile = AuthSourceStatic, "http://127.0.0.1:1", tokenFile
		}, nil},

		{"backoff base low", func(c *Config) { c.Reconnect.BackoffBase = Duration(time.Millisecond) }, []string{"Reconnect.BackoffBase: 1ms is out of range (allowed 10ms..10m)"}},
		{"backoff base high", func(c *Config) {
			c.Reconnect.BackoffBase, c.Reconnect.BackoffMax = Duration(11*time.Minute), Duration(time.Hour)
		}, []string{"Reconnect.BackoffBase: 11m is out of range (allowed 10ms..10m)"}},
		{"backoff max below base", func(c *Config) { c.Reconnect.BackoffMax = Duration(500 * time.Millisecond) }, []string{"Reconnect.BackoffMax: 500ms must be at least Reconnect.BackoffBase (1s)"}},
		{"backoff max above 24h", func(c *Config) { c.Reconnect.BackoffMax = Duration(25 * time.Hour) }, []string{"Reconnect.BackoffMax: 25h is out of range (at most 24h)"}},
		{"backoff max equal base", func(c *Config) { c.Reconnect.BackoffMax = c.Reconnect.BackoffBase }, nil},
		{"first jitter off", func(c *Config) { c.Reconnect.FirstJitter = 0 }, nil},
		{"start jitter off", func(c *Config) { c.Reconnect.StartJitter = 0 }, nil},
		{"start jitter above 10m", func(c *Config) { c.Reconnect.StartJitter = Duration(11 * time.Minute) }, []string{"Reconnect.StartJitter: 11m is out of range (allowed 0s..10m)"}},
		{"first jitter above 10m", func(c *Config) { c.Reconnect.FirstJitter = Duration(11 * time.Minute) }, []string{"Reconnect.FirstJitter: 11m is out of range (allowed 0s..10m)"}},

		{"link ping low", func(c *Config) { c.Link.PingInterval = Duration(time.Millisecond) }, []string{"Link.PingInterval: 1ms is out of range (allowed 10ms..1h)"}},
		{"link read timeout not above ping", func(c *Config) { c.Link.ReadTimeout = Duration(50 * time.Second) }, []string{"Link.ReadTimeout: 50s must be greater than Link.PingInterval (50s)"}},
		{"link write timeout zero", func(c *Config) { c.Link.WriteTimeout = 0 }, []string{"Link.WriteTimeout: 0s is out of range (allowed 10ms..10m)"}},
		{"message size low", func(c *Config) { c.Link.MaxMessageSize = 8192 }, []string{"Link.MaxMessageSize: 8192 is out of range (allowed 65536..8388608, 64 KiB..8 MiB)"}},
		{"message size high", func(c *Config) { c.Link.MaxMessageSize = 8<<20 + 1 }, []string{"Link.MaxMessageSize: 8388609 is out of range"}},
		{"message size bounds", func(c *Config) { c.Link.MaxMessageSize = 64 << 10 }, nil},
		{"latency target off", func(c *Config) { c.Link.LatencyTarget = 0 }, nil},
		{"latency target high", func(c *Config) { c.Link.LatencyTarget = Duration(2 * time.Minute) }, []string{"Link.LatencyTarget: 2m is out of range (allowed 0s..1m)"}},
		{"congestion control bbr", func(c *Config) { c.Link.CongestionControl = "bbr" }, nil},
		{"congestion control not a name", func(c *Config) { c.Link.CongestionControl = "bbr; reboot" }, []string{"Link.CongestionControl: \"bbr; reboot\" is not a congestion control name"}},

		{"metrics loopback v4", func(c *Config) { c.Metrics.Listen = "127.0.0.1:9100" }, nil},
		{"metrics loopback v6", func(c *Config) { c.Metrics.Listen = "[::1]:0" }, nil},
		{"metrics localhost", func(c *Config) { c.Metrics.Listen = "localhost:9100" }, nil},
		{"metrics all interfaces", func(c *Config) { c.Metrics.Listen = ":9100" }, []string{`Metrics.Listen: ":9100" is not a loopback address; set Metrics.AllowNonLoopback`}},
		{"metrics wildcard", func(c *Config) { c.Metrics.Listen = "0.0.0.0:9100" }, []string{`Metrics.Listen: "0.0.0.0:9100" is not a loopback address`}},
		{"metrics hostname", func(c *Config) { c.Metrics.Listen = "device.local:9100" }, []string{`Metrics.Listen: "device.local:9100" is not a loopback address`}},
		{"metrics allowed non-loopback", func(c *Config) { c.Metrics.Listen, c.Metrics.AllowNonLoopback = ":9100", true }, nil},
		{"metrics no port", func(c *Config) { c.Metrics.Listen = "127.0.0.1" }, []string{`Metrics.Listen: "127.0.0.1" is not host:port`}},
		{"metrics named port", func(c *Config) { c.Metrics.Listen = "127.0.0.1:http" }, []string{`Metrics.Listen: "127.0.0.1:http": port "http" is not a number in 0..65535`}},
		{"metrics port too big", func(c *Config) { c.Metrics.Listen = "127.0.0.1:70000" }, []string{`port "70000" is not a number`}},

		{"log level", func(c *Config) { c.Log.Level = "verbose" }, []string{`Log.Level: "verbose" is not allowed (allowed: error, warn, info, debug, trace)`}},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, []string{`Log.Format: "xml" is not allowed (allowed: text, json)`}},
		{"log journal", func(c *Config) { c.Log.Journal = "maybe" }, []string{`Log.Journal: "maybe" is not allowed (allowed: auto, on, off)`}},

		{"every problem is reported", func(c *Config) {
			c.User, c.Sessions.MaxTotal, c.Log.Format, c.Link.MaxMessageSize = "", 0, "xml", 1
		}, []string{"User: required", "Sessions.MaxTotal: 0", "Log.Format:", "Link.MaxMessageSize: 1 "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tt.mutate(c)
			err := c.Validate(shells)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted the config, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\ndoes not contain\n  %s", err, w)
				}
			}
			if got, want := strings.Count(err.Error(), "\n")+1, len(tt.want); got != want {
				t.Errorf("got %d problems, want %d:\n%v", got, want, err)
			}
		})
	}
}

func TestValidateShellCommand(t *testing.T) {
	t.Parallel()
	shell := fakeShell(t)
	dir := t.TempDir()
	notExec := writeFile(t, dir, "notexec", "#!/bin/sh\n")
	unlisted := filepath.Join(dir, "unlisted")
	if err := os.WriteFile(unlisted, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	shells := writeFile(t, dir, "shells", "# comment\n/bin/sh\n  "+shell+"  \n"+notExec+"\n"+dir+"\n")
	noShells := filepath.Join(dir, "no-such-shells")

	tests := []struct {
		name, cmd, shells, want string
	}{
		{"listed", shell, shells, ""},
		{"bin sh listed", "/bin/sh", shells, ""},
		{"not listed", unlisted, shells, "ShellCommand: " + unlisted + " is not listed in " + shells},
		{"relative", "sh", shells, `ShellCommand: "sh" is not an absolute path`},
		{"empty", "", shells, "ShellCommand: required"},
		{"not executable", notExec, shells, "ShellCommand: " + notExec + " is not executable (mode -rw-------)"},
		{"missing", filepath.Join(dir, "nope"), shells, "ShellCommand: stat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"directory", dir, shells, "ShellCommand: " + dir + " is not a regular file"},
		{"no shells file: bin sh", "/bin/sh", noShells, ""},
		{"no shells file: other", shell, noShells, "ShellCommand: " + shell + " is not allowed: open " + noShells + ": no such file or directory; without it only /bin/sh is accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			c.ShellCommand = tt.cmd
			err := c.Validate(tt.shells)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("Validate error = %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestValidateUser(t *testing.T) {
	t.Parallel()
	shells := shellsFile(t)
	for _, tt := range []struct {
		user string
		ok   bool
	}{
		{"nobody", true},
		{"root", true},
		{"no-such-user-tether-test", false},
	} {
		c := validConfig()
		c.User = tt.user
		err := c.Validate(shells)
		if tt.ok && err != nil {
			t.Errorf("user %q: %v", tt.user, err)
		}
		if !tt.ok && (err == nil || !strings.HasPrefix(err.Error(), "User: ") || !strings.Contains(err.Error(), tt.user)) {
			t.Errorf("user %q: error = %v, want one naming the user", tt.user, err)
		}
	}
}

func TestValidateDefaultShellsFile(t *testing.T) {
	// "" means /etc/shells, which lists /bin/sh on any system tether targets.
	t.Parallel()
	if err := validConfig().Validate(""); err != nil {
		t.Fatalf("Validate with /etc/shells: %v", err)
	}
	c := validConfig()
	c.ShellCommand = fakeShell(t)
	if err := c.Validate(""); err == nil || !strings.Contains(err.Error(), DefaultShellsFile) {
		t.Fatalf("Validate error = %v, want one naming %s", err, DefaultShellsFile)
	}
}
