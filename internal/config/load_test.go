package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/shell"
)

// clearEnv removes every TETHER_* variable for the duration of the test so
// the caller's environment cannot leak into expectations.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "") // registers the restore
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// shellsFile writes a shells list with /bin/sh and the given extra lines.
func shellsFile(t *testing.T, extra ...string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "shells", "# test shells\n/bin/sh\n"+strings.Join(extra, "\n")+"\n")
}

// fakeShell creates an executable file usable as ShellCommand.
func fakeShell(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "myshell")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadFiles writes main and fallback (an empty string means the file does
// not exist) and loads them.
func loadFiles(t *testing.T, mainContent, fallbackContent, shells string) (*Config, []string, LoadOptions, error) {
	t.Helper()
	dir := t.TempDir()
	opts := LoadOptions{
		Path:         filepath.Join(dir, "tether.conf"),
		FallbackPath: filepath.Join(dir, "fallback.conf"),
		ShellsFile:   shells,
	}
	if mainContent != "" {
		writeFile(t, dir, "tether.conf", mainContent)
	}
	if fallbackContent != "" {
		writeFile(t, dir, "fallback.conf", fallbackContent)
	}
	cfg, warnings, err := Load(opts)
	return cfg, warnings, opts, err
}

func TestLoadSources(t *testing.T) {
	tests := []struct {
		name     string
		main     string
		fallback string
		env      map[string]string
		check    func(t *testing.T, c *Config)
	}{
		{
			name: "main only",
			main: `{"User": "nobody", "Sessions": {"MaxTotal": 4}, "Terminal": {"Width": 132}}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "User", c.User, "nobody")
				eq(t, "MaxTotal", c.Sessions.MaxTotal, uint32(4))
				eq(t, "Width", c.Terminal.Width, uint16(132))
				eq(t, "Height", c.Terminal.Height, uint16(40))
				eq(t, "ShellCommand", c.ShellCommand, "/bin/sh")
				eq(t, "ShellArguments", c.ShellArguments, []string{"--login"})
				eq(t, "Lang", c.Lang, "C.UTF-8")
			},
		},
		{
			name:     "fallback only",
			fallback: `{"User": "root", "Sessions": {"MaxPerUser": 3}}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "User", c.User, "root")
				eq(t, "MaxPerUser", c.Sessions.MaxPerUser, uint32(3))
				eq(t, "MaxTotal", c.Sessions.MaxTotal, uint32(16))
			},
		},
		{
			name: "main over fallback field by field, arrays replaced",
			fallback: `{"User": "root", "ShellArguments": ["-a", "-b"], "Lang": "de_DE.UTF-8",
				"Sessions": {"MaxTotal": 8, "MaxPerUser": 2, "StopGrace": "3s"},
				"Terminal": {"Width": 100, "Height": 30},
				"Limits": {"FileTransfer": {"OwnerGet": ["a", "b", "c"], "Chroot": "/data"}}}`,
			main: `{"User": "nobody", "ShellArguments": ["-c"],
				"Sessions": {"MaxTotal": 4},
				"Terminal": {"Height": 25},
				"Limits": {"FileTransfer": {"OwnerGet": ["z"]}}}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "User", c.User, "nobody")
				eq(t, "ShellArguments", c.ShellArguments, []string{"-c"})
				eq(t, "Lang", c.Lang, "de_DE.UTF-8")
				eq(t, "MaxTotal", c.Sessions.MaxTotal, uint32(4))
				eq(t, "MaxPerUser", c.Sessions.MaxPerUser, uint32(2))
				eq(t, "StopGrace", c.Sessions.StopGrace, Duration(3*time.Second))
				eq(t, "Width", c.Terminal.Width, uint16(100))
				eq(t, "Height", c.Terminal.Height, uint16(25))
				eq(t, "OwnerGet", c.Limits.FileTransfer.OwnerGet, []string{"z"})
				eq(t, "Chroot", c.Limits.FileTransfer.Chroot, "/data")
			},
		},
		{
			name:     "empty array means no arguments",
			fallback: `{"ShellArguments": ["-a"]}`,
			main:     `{"User": "nobody", "ShellArguments": []}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "ShellArguments", c.ShellArguments, []string{})
			},
		},
		{
			name: "null arguments mean the default",
			main: `{"User": "nobody", "ShellArguments": null, "Sessions": null}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "ShellArguments", c.ShellArguments, []string{"--login"})
				eq(t, "MaxTotal", c.Sessions.MaxTotal, uint32(16))
			},
		},
		{
			name: "zero terminal size and MaxPerUser become defaults",
			main: `{"User": "nobody", "Terminal": {"Width": 0, "Height": 0}, "Sessions": {"MaxPerUser": 0}}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "Width", c.Terminal.Width, uint16(80))
				eq(t, "Height", c.Terminal.Height, uint16(40))
				eq(t, "MaxPerUser", c.Sessions.MaxPerUser, uint32(1))
			},
		},
		{
			name: "durations as numbers and strings",
			main: `{"User": "nobody", "Sessions": {"StopGrace": 0.5, "PingInterval": "45s", "PongTimeout": 200},
				"Link": {"PingInterval": "1m", "ReadTimeout": 61.5}}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "StopGrace", c.Sessions.StopGrace, Duration(500*time.Millisecond))
				eq(t, "PingInterval", c.Sessions.PingInterval, Duration(45*time.Second))
				eq(t, "PongTimeout", c.Sessions.PongTimeout, Duration(200*time.Second))
				eq(t, "Link.PingInterval", c.Link.PingInterval, Duration(time.Minute))
				eq(t, "Link.ReadTimeout", c.Link.ReadTimeout, Duration(61500*time.Millisecond))
			},
		},
		{
			name: "enumerations are case-insensitive",
			main: `{"User": "nobody", "Log": {"Level": "DEBUG", "Format": "Json"}, "Auth": {"Source": "DBus"}}`,
			check: func(t *testing.T, c *Config) {
				eq(t, "Level", c.Log.Level, "debug")
				eq(t, "Format", c.Log.Format, "json")
				eq(t, "Source", c.Auth.Source, "dbus")
			},
		},
		{
			name: "no files, environment supplies User",
			env:  map[string]string{"TETHER_USER": "nobody"},
			check: func(t *testing.T, c *Config) {
				eq(t, "User", c.User, "nobody")
				if !reflect.DeepEqual(withUser(Default(), "nobody", true), c) {
					t.Errorf("config is not the defaults:\n%+v", c)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, warnings, _, err := loadFiles(t, tt.main, tt.fallback, shellsFile(t))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(warnings) != 0 {
				t.Errorf("unexpected warnings: %q", warnings)
			}
			tt.check(t, cfg)
		})
	}
}

func withUser(c *Config, user string, normalize bool) *Config {
	c.User = user
	if normalize {
		c.normalize()
	}
	return c
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

// A session ping interval above a minute is capped, with a warning: the
// Mender UI closes a terminal that hears no ping within 65 s of opening it.
func TestLoadCapsSessionPingInterval(t *testing.T) {
	tests := []struct {
		interval string
		want     time.Duration
		warns    int
	}{
		{"59s", 59 * time.Second, 0},
		{"60s", time.Minute, 0},
		{"61s", time.Minute, 1},
		{"30m", time.Minute, 1},
	}
	for _, tt := range tests {
		t.Run(tt.interval, func(t *testing.T) {
			clearEnv(t)
			cfg, warnings, _, err := loadFiles(t, `{"User": "nobody", "Sessions": {"PingInterval": "`+tt.interval+`", "PongTimeout": "2h"}}`, "", shellsFile(t))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := cfg.Sessions.PingInterval.Duration(); got != tt.want {
				t.Errorf("PingInterval = %v, want %v", got, tt.want)
			}
			if len(warnings) != tt.warns || (tt.warns > 0 && !strings.Contains(warnings[0], "Sessions.PingInterval")) {
				t.Errorf("warnings = %q, want %d about Sessions.PingInterval", warnings, tt.warns)
			}
		})
	}
}

func TestLoadNoConfiguration(t *testing.T) {
	for _, env := range []map[string]string{nil, {"TETHER_USER": ""}} {
		clearEnv(t)
		for k, v := range env {
			t.Setenv(k, v)
		}
		cfg, _, opts, err := loadFiles(t, "", "", shellsFile(t))
		if err == nil {
			t.Fatalf("env %v: Load succeeded: %+v", env, cfg)
		}
		if cfg != nil {
			t.Errorf("env %v: config returned with error", env)
		}
		for _, want := range []string{opts.Path, opts.FallbackPath, "TETHER_USER"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("env %v: error %q does not mention %q", env, err, want)
			}
		}
	}
}

func TestLoadFallbackWithoutUser(t *testing.T) {
	clearEnv(t)
	_, _, _, err := loadFiles(t, "", `{"ShellCommand": "/bin/sh"}`, shellsFile(t))
	if err == nil || !strings.Contains(err.Error(), "User: required") {
		t.Fatalf("Load error = %v, want User: required", err)
	}
}

func TestLoadOptionsDefaultPaths(t *testing.T) {
	t.Parallel()
	m, f := LoadOptions{}.paths()
	eq(t, "main", m, "/etc/tether/tether.conf")
	eq(t, "fallback", f, "/var/lib/tether/tether.conf")
	m, f = LoadOptions{Path: "/a", FallbackPath: "/b"}.paths()
	eq(t, "main", m, "/a")
	eq(t, "fallback", f, "/b")
}

func TestLoadSamePathOnce(t *testing.T) {
	clearEnv(t)
	p := writeFile(t, t.TempDir(), "c.conf", `{"User": "nobody", "Bogus": 1}`)
	_, warnings, err := Load(LoadOptions{Path: p, FallbackPath: p, ShellsFile: shellsFile(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 {
		t.Errorf("warnings = %q, want one", warnings)
	}
}

func TestEnvOverridesFile(t *testing.T) {
	shell := fakeShell(t)
	shells := shellsFile(t, shell)
	file := `{"User": "root", "ShellCommand": "/bin/sh", "ShellArguments": ["-x"],
		"Terminal": {"Disable": false, "Width": 100},
		"Sessions": {"MaxTotal": 8, "MaxPerUser": 3, "StopGrace": "5s", "StopExpired": true, "EvictOldest": true},
		"Link": {"WriteTimeout": "20s", "MaxMessageSize": 131072},
		"Metrics": {"Listen": "127.0.0.1:9100"},
		"Log": {"Level": "warn"}}`

	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "unset variables leave file values alone",
			env:  nil,
			check: func(t *testing.T, c *Config) {
				eq(t, "User", c.User, "root")
				eq(t, "ShellArguments", c.ShellArguments, []string{"-x"})
				eq(t, "Width", c.Terminal.Width, uint16(100))
				eq(t, "MaxTotal", c.Sessions.MaxTotal, uint32(8))
				eq(t, "MaxPerUser", c.Sessions.MaxPerUser, uint32(3))
				eq(t, "EvictOldest", c.Sessions.EvictOldest, true)
				eq(t, "StopGrace", c.Sessions.StopGrace, Duration(5*time.Second))
				eq(t, "WriteTimeout", c.Link.WriteTimeout, Duration(20*time.Second))
				eq(t, "MaxMessageSize", c.Link.MaxMessageSize, 131072)
				eq(t, "Listen", c.Metrics.Listen, "127.0.0.1:9100")
				eq(t, "Level", c.Log.Level, "warn")
			},
		},
		{
			name: "every kind of value",
			env: map[string]string{
				"TETHER_USER":                 "nobody",
				"TETHER_SHELLCOMMAND":         shell,
				"TETHER_SHELLARGUMENTS":       "-i,-l",
				"TETHER_TERMINAL_DISABLE":     "true",
				"TETHER_TERMINAL_WIDTH":       "132",
				"TETHER_SESSIONS_MAXTOTAL":    "32",
				"TETHER_SESSIONS_MAXPERUSER":  "4",
				"TETHER_SESSIONS_EVICTOLDEST": "false",
				"TETHER_SESSIONS_STOPGRACE":   "500ms",
				"TETHER_LINK_WRITETIMEOUT":    "3",
				"TETHER_LINK_MAXMESSAGESIZE":  "65536",
				"TETHER_METRICS_LISTEN":       "[::1]:9200",
				"TETHER_LOG_LEVEL":            "trace",
				"TETHER_AUTH_TOKEN":           "secret-token",
			},
			check: func(t *testing.T, c *Config) {
				eq(t, "User", c.User, "nobody")
				eq(t, "ShellCommand", c.ShellCommand, shell)
				eq(t, "ShellArguments", c.ShellArguments, []string{"-i", "-l"})
				eq(t, "Disable", c.Terminal.Disable, true)
				eq(t, "Width", c.Terminal.Width, uint16(132))
				eq(t, "MaxTotal", c.Sessions.MaxTotal, uint32(32))
				eq(t, "MaxPerUser", c.Sessions.MaxPerUser, uint32(4))
				eq(t, "EvictOldest", c.Sessions.EvictOldest, false)
				eq(t, "StopGrace", c.Sessions.StopGrace, Duration(500*time.Millisecond))
				eq(t, "WriteTimeout", c.Link.WriteTimeout, Duration(3*time.Second))
				eq(t, "MaxMessageSize", c.Link.MaxMessageSize, 65536)
				eq(t, "Listen", c.Metrics.Listen, "[::1]:9200")
				eq(t, "Level", c.Log.Level, "trace")
				eq(t, "Token", c.Auth.Token, "secret-token")
			},
		},
		{
			name: "deeply nested key",
			env:  map[string]string{"TETHER_LIMITS_FILETRANSFER_COUNTERS_MAXBYTESTXPERMINUTE": "1000"},
			check: func(t *testing.T, c *Config) {
				eq(t, "MaxBytesTxPerMinute", c.Limits.FileTransfer.Counters.MaxBytesTxPerMinute, uint64(1000))
				eq(t, "MaxTotal", c.Sessions.MaxTotal, uint32(8))
			},
		},
		{
			name: "empty list variable means no arguments",
			env:  map[string]string{"TETHER_SHELLARGUMENTS": ""},
			check: func(t *testing.T, c *Config) {
				eq(t, "ShellArguments", c.ShellArguments, []string{})
			},
		},
		{
			name: "empty string variable clears a string",
			env:  map[string]string{"TETHER_METRICS_LISTEN": ""},
			check: func(t *testing.T, c *Config) {
				eq(t, "Listen", c.Metrics.Listen, "")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, warnings, _, err := loadFiles(t, file, "", shells)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(warnings) != 0 {
				t.Errorf("unexpected warnings: %q", warnings)
			}
			tt.check(t, cfg)
		})
	}
}

func TestEnvErrors(t *testing.T) {
	tests := []struct {
		name, key, value string
	}{
		{"not a number", "TETHER_SESSIONS_MAXTOTAL", "many"},
		{"negative unsigned", "TETHER_SESSIONS_MAXPERUSER", "-1"},
		{"uint16 overflow", "TETHER_TERMINAL_WIDTH", "70000"},
		{"not a bool", "TETHER_LINK_INSECURESKIPVERIFY", "perhaps"},
		{"not a duration", "TETHER_LINK_PINGINTERVAL", "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tt.key, tt.value)
			_, _, _, err := loadFiles(t, `{"User": "nobody"}`, "", shellsFile(t))
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("Load error = %v, want one naming %s", err, tt.key)
			}
		})
	}
}

func TestUnknownEnvironmentVariable(t *testing.T) {
	clearEnv(t)
	t.Setenv("TETHER_SESIONS_MAXPERUSER", "2")
	t.Setenv("TETHER_USER", "nobody")
	_, warnings, _, err := loadFiles(t, "", "", shellsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`unknown environment variable "TETHER_SESIONS_MAXPERUSER" (no such configuration key)`}
	eq(t, "warnings", warnings, want)
}

func TestEnvKeysMatchEnvconfig(t *testing.T) {
	// Every name envKeys knows (the unknown-variable warning relies on the
	// list) must be read by loadEnv: a marker value either lands in the
	// config or fails to parse with an error naming the variable.
	keys := envKeys()
	for _, k := range []string{"TETHER_USER", "TETHER_SESSIONS_MAXPERUSER", "TETHER_METRICS_LISTEN",
		"TETHER_AUTH_TOKEN", "TETHER_SHELLCOMMAND", "TETHER_LIMITS_FILETRANSFER_COUNTERS_MAXBYTESRXPERMINUTE",
		"TETHER_FILETRANSFER_DISABLE", "TETHER_LINK_READTIMEOUT"} {
		if !keys[k] {
			t.Errorf("envKeys lacks %s", k)
		}
	}
	const marker = "x-marker"
	for k := range keys {
		clearEnv(t)
		t.Setenv(k, marker)
		cfg, warnings, _, err := loadFiles(t, `{"User": "nobody"}`, "", shellsFile(t))
		// ServerURL with the dbus source is upstream's deprecated key.
		if len(warnings) != 0 && (k != "TETHER_SERVERURL" || len(warnings) != 1 || !strings.HasPrefix(warnings[0], "ServerURL field is deprecated")) {
			t.Errorf("%s: warnings %q", k, warnings)
		}
		if err != nil && strings.Contains(err.Error(), "environment variable "+k+":") {
			continue
		}
		if cfg == nil {
			t.Errorf("%s: Load failed without naming the variable: %v", k, err)
			continue
		}
		b, jerr := json.Marshal(cfg)
		if jerr != nil {
			t.Fatal(jerr)
		}
		if !strings.Contains(string(b), marker) {
			t.Errorf("%s: loadEnv ignored the variable", k)
		}
	}
}

func TestUpstreamConfigFile(t *testing.T) {
	clearEnv(t)
	data, err := os.ReadFile("testdata/mender-connect.conf")
	if err != nil {
		t.Fatal(err)
	}
	cfg, warnings, opts, err := loadFiles(t, string(data), "", shellsFile(t))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []string{
		"SkipVerify field is deprecated, ignoring. (in " + opts.Path + "; TLS certificates stay verified; tether's own key is Link.InsecureSkipVerify)",
		"Servers field is deprecated, ignoring. (in " + opts.Path + "; the server URL comes from the auth service)",
		"ClientProtocol field is deprecated, ignoring. (in " + opts.Path + "; the auth service's local proxy speaks to the server)",
		"HttpsClient field is deprecated, ignoring. (in " + opts.Path + "; client certificates are the auth service's business)",
		"ReconnectIntervalSeconds field is unused since mender-connect 2.0, ignoring. (in " + opts.Path + "; tether's backoff is Reconnect.BackoffBase and Reconnect.BackoffMax)",
		"ServerURL field is deprecated, ignoring. (the server URL comes from the auth service; tether reads ServerURL only with Auth.Source=static)",
	}
	eq(t, "warnings", warnings, want)

	eq(t, "ShellCommand", cfg.ShellCommand, "/bin/sh")
	eq(t, "ShellArguments", cfg.ShellArguments, []string{"--login", "-i"})
	eq(t, "User", cfg.User, "nobody")
	eq(t, "Terminal", cfg.Terminal, TerminalConfig{Width: 120, Height: 50})
	eq(t, "StopExpired", cfg.Sessions.StopExpired, true)
	eq(t, "ExpireAfterIdle", cfg.Sessions.ExpireAfterIdle, uint32(300))
	eq(t, "MaxPerUser", cfg.Sessions.MaxPerUser, uint32(2))
	eq(t, "ServerURL", cfg.ServerURL, "https://hosted.mender.io")
	eq(t, "FileTransfer", cfg.FileTransfer, FileTransferConfig{Disable: true})
	eq(t, "PortForward.Disable", cfg.PortForward.Disable, false)
	eq(t, "MenderClient.Disable", cfg.MenderClient.Disable, true)
	eq(t, "Limits", cfg.Limits, LimitsConfig{
		Enabled: true,
		FileTransfer: FileTransferLimits{
			Chroot:           "/var/lib/mender/filetransfer",
			FollowSymLinks:   true,
			AllowOverwrite:   true,
			OwnerPut:         "mender",
			GroupPut:         "mender",
			OwnerGet:         []string{"mender", "root"},
			GroupGet:         []string{"mender"},
			Umask:            "0022",
			MaxFileSize:      4294967296,
			Counters:         RateLimits{MaxBytesTxPerMinute: 1048576, MaxBytesRxPerMinute: 2097152},
			AllowSuid:        false,
			RegularFilesOnly: true,
			PreserveMode:     true,
			PreserveOwner:    true,
		},
	})
	eq(t, "IdleTimeout", cfg.IdleTimeout(), 300*time.Second)
	eq(t, "AbsoluteTimeout", cfg.AbsoluteTimeout(), time.Duration(0))
}

func TestUnknownKeyWarnings(t *testing.T) {
	clearEnv(t)
	fallback := `{"Colour": "blue"}`
	main := `{
		"User": "nobody",
		"Sessions": {"MaxPerUsr": 2, "MaxTotal": 4},
		"limits": {"FileTransfer": {"Counters": {"MaxBytesPerHour": 1}, "Chroot": "/x"}, "Enable": true},
		"Terminal": {"Width": 90, "Depth": {"nested": [1, {"a": 2}]}},
		"user": "nobody",
		"servers": "not even the right type"
	}`
	cfg, warnings, opts, err := loadFiles(t, main, fallback, shellsFile(t))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []string{
		`unknown configuration key "Colour" in ` + opts.FallbackPath,
		`unknown configuration key "Sessions.MaxPerUsr" in ` + opts.Path,
		`unknown configuration key "limits.FileTransfer.Counters.MaxBytesPerHour" in ` + opts.Path,
		`unknown configuration key "limits.Enable" in ` + opts.Path,
		`unknown configuration key "Terminal.Depth" in ` + opts.Path,
		`configuration key "User" appears more than once in ` + opts.Path + ` (as "User" and "user"); the last one wins`,
		"Servers field is deprecated, ignoring. (in " + opts.Path + "; the server URL comes from the auth service)",
	}
	eq(t, "warnings", warnings, want)
	// Known keys next to unknown ones still load.
	eq(t, "MaxTotal", cfg.Sessions.MaxTotal, uint32(4))
	eq(t, "Chroot", cfg.Limits.FileTransfer.Chroot, "/x")
	eq(t, "Width", cfg.Terminal.Width, uint16(90))
}

func TestFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // substrings of the error; "FILE" stands for the path
		notWant string
	}{
		{
			name:    "string for number",
			content: `{"User": "nobody", "Sessions": {"MaxTotal": "16"}}`,
			want:    []string{`FILE:1:45: configuration key "Sessions.MaxTotal": expected a number, got a string`},
		},
		{
			name:    "number for string",
			content: "{\n  \"User\": 5\n}",
			want:    []string{`FILE:2:11: configuration key "User": expected a string, got a number`},
		},
		{
			name:    "uint16 overflow",
			content: `{"Terminal": {"Width": 70000}}`,
			want:    []string{`configuration key "Terminal.Width": 70000 is not an integer in 0..65535`},
		},
		{
			name:    "negative unsigned",
			content: `{"Sessions": {"MaxPerUser": -1}}`,
			want:    []string{`"Sessions.MaxPerUser": -1 is not an integer in 0..4294967295`},
		},
		{
			name:    "fraction for integer",
			content: `{"Link": {"MaxMessageSize": 1.5}}`,
			want:    []string{`"Link.MaxMessageSize": 1.5 is not an integer`},
		},
		{
			name:    "string for array",
			content: `{"ShellArguments": "--login"}`,
			want:    []string{`"ShellArguments": expected an array, got a string`},
		},
		{
			name:    "bad array element",
			content: `{"ShellArguments": ["-l", 3]}`,
			want:    []string{`FILE:1:27: configuration key "ShellArguments[1]": expected a string, got a number`},
		},
		{
			name:    "number for object",
			content: `{"Link": 5}`,
			want:    []string{`"Link": expected an object, got a number`},
		},
		{
			name:    "object for bool",
			content: `{"Link": {"InsecureSkipVerify": {"a": [1, 2]}}, "User": "nobody"}`,
			want:    []string{`"Link.InsecureSkipVerify": expected true or false, got an object`},
		},
		{
			name:    "bool for duration",
			content: `{"Sessions": {"StopGrace": true}}`,
			want:    []string{`"Sessions.StopGrace": expected a duration`},
		},
		{
			name:    "bad duration string",
			content: `{"Reconnect": {"BackoffMax": "forever"}}`,
			want:    []string{`"Reconnect.BackoffMax": invalid duration "forever"`},
		},
		{
			name:    "token of the wrong type does not leak its value",
			content: `{"Auth": {"Token": 918273645}}`,
			want:    []string{`"Auth.Token": expected a string, got a number`},
			notWant: "918273645",
		},
		{
			name:    "all problems are reported",
			content: `{"User": 1, "Terminal": {"Height": "x"}, "Log": {"Level": false}}`,
			want:    []string{`"User"`, `"Terminal.Height"`, `"Log.Level"`},
		},
		{
			name:    "syntax error location",
			content: "{\n  \"User\": \"nobody\",\n  \"Sessions\": {\"MaxTotal\": 4,}\n}",
			want:    []string{`FILE:3:30: invalid JSON: invalid character '}'`},
		},
		{
			name:    "truncated file",
			content: `{"User": "nobody"`,
			want:    []string{`FILE:1:17: invalid JSON: unexpected end of JSON input`},
		},
		{
			name:    "top level not an object",
			content: `["User", "nobody"]`,
			want:    []string{`FILE: 1:1: the top level must be a JSON object, got an array`},
		},
		{
			name:    "empty file",
			content: " \n",
			want:    []string{`FILE:`, `invalid JSON`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("TETHER_USER", "nobody")
			dir := t.TempDir()
			path := writeFile(t, dir, "tether.conf", tt.content)
			cfg, _, err := Load(LoadOptions{Path: path, FallbackPath: filepath.Join(dir, "none"), ShellsFile: shellsFile(t)})
			if err == nil {
				t.Fatalf("Load succeeded: %+v", cfg)
			}
			if cfg != nil {
				t.Error("config returned with a file error")
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "FILE", path)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\ndoes not contain\n  %s", err, w)
				}
			}
			if tt.notWant != "" && strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("error %q contains %q", err, tt.notWant)
			}
		})
	}
}

func TestUnreadableFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	fallback := filepath.Join(dir, "fallback.d")
	if err := os.Mkdir(fallback, 0o755); err != nil {
		t.Fatal(err)
	}
	main := writeFile(t, dir, "tether.conf", `{"User": "nobody"}`)
	_, _, err := Load(LoadOptions{Path: main, FallbackPath: fallback, ShellsFile: shellsFile(t)})
	if err == nil || !strings.Contains(err.Error(), fallback) {
		t.Fatalf("Load error = %v, want one naming %s", err, fallback)
	}
}

func TestLoadReturnsConfigOnValidationError(t *testing.T) {
	clearEnv(t)
	cfg, _, _, err := loadFiles(t, `{"User": "nobody", "Sessions": {"MaxTotal": 0}}`, "", shellsFile(t))
	if err == nil || !strings.Contains(err.Error(), "Sessions.MaxTotal: 0 is out of range (allowed 1..1024)") {
		t.Fatalf("Load error = %v", err)
	}
	if cfg == nil || cfg.User != "nobody" {
		t.Fatalf("cfg = %+v, want the effective config", cfg)
	}
}

func TestStopExpiredNormalisation(t *testing.T) {
	tests := []struct {
		sessions      string
		wantAfter     uint32
		wantIdle      uint32
		idle, absolut time.Duration
	}{
		{`{}`, 0, 600, 600 * time.Second, 0},
		{`{"StopExpired": true}`, 0, 600, 600 * time.Second, 0},
		{`{"StopExpired": false}`, 0, 0, 0, 0},
		{`{"StopExpired": false, "ExpireAfter": 100, "ExpireAfterIdle": 50}`, 0, 0, 0, 0},
		{`{"ExpireAfter": 3600}`, 3600, 0, 0, time.Hour},
		{`{"ExpireAfterIdle": 30}`, 0, 30, 30 * time.Second, 0},
		{`{"ExpireAfter": 3600, "ExpireAfterIdle": 30}`, 3600, 30, 30 * time.Second, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.sessions, func(t *testing.T) {
			clearEnv(t)
			cfg, warnings, _, err := loadFiles(t, `{"User": "nobody", "Sessions": `+tt.sessions+`}`, "", shellsFile(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) != 0 {
				t.Errorf("warnings: %q", warnings)
			}
			eq(t, "ExpireAfter", cfg.Sessions.ExpireAfter, tt.wantAfter)
			eq(t, "ExpireAfterIdle", cfg.Sessions.ExpireAfterIdle, tt.wantIdle)
			eq(t, "IdleTimeout", cfg.IdleTimeout(), tt.idle)
			eq(t, "AbsoluteTimeout", cfg.AbsoluteTimeout(), tt.absolut)
		})
	}
}

// The sessions' containment and limits are keys of Sessions (file, any
// case, and environment), with their defaults, and bad values are named.
func TestLoadSessionLimits(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		want    shell.Limits
		wantErr string
		warns   int
	}{
		{"defaults", `{"User": "nobody"}`, nil, shell.DefaultLimits(), "", 0},
		{"file", `{"User": "nobody", "Sessions": {"Containment": "cgroup", "memorymax": "64M", "TasksMax": 32, "CPUWeight": 20, "PAMService": "login"}}`, nil,
			shell.Limits{Containment: "cgroup", MemoryMax: "64M", TasksMax: 32, CPUWeight: 20, PAMService: "login"}, "", 0},
		{"environment", `{"User": "nobody"}`, map[string]string{"TETHER_SESSIONS_CONTAINMENT": "process-group", "TETHER_SESSIONS_TASKSMAX": "16"},
			shell.Limits{Containment: "process-group", MemoryMax: "25%", TasksMax: 16, CPUWeight: 50}, "", 0},
		{"bad values", `{"User": "nobody", "Sessions": {"Containment": "jail", "MemoryMax": "lots"}}`, nil, shell.Limits{},
			"Sessions.Containment", 0},
		{"the struct is no key", `{"User": "nobody", "Sessions": {"Limits": {"TasksMax": 1}}}`, nil, shell.DefaultLimits(), "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, warnings, _, err := loadFiles(t, tt.file, "", shellsFile(t))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "Sessions.MemoryMax") {
					t.Fatalf("Load: %v, want errors about %s and Sessions.MemoryMax", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if cfg.Sessions.Limits != tt.want {
				t.Errorf("limits %+v, want %+v", cfg.Sessions.Limits, tt.want)
			}
			if len(warnings) != tt.warns {
				t.Errorf("warnings %q, want %d", warnings, tt.warns)
			}
		})
	}
}
