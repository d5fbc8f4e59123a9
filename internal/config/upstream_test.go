package config

import (
	"strings"
	"testing"
	"time"
)

// TestUpstreamKeys pins, key by key, what tether makes of a mender-connect
// configuration (spec 5.2): whether mender-connect starts with the file,
// whether tether does, the warning tether gives and the effective values.
// Every file mender-connect accepts must start tether with the same meaning.
func TestUpstreamKeys(t *testing.T) {
	type check func(t *testing.T, c *Config)
	tests := []struct {
		key      string
		file     string // the configuration, User added unless it names one
		upstream bool   // mender-connect starts
		starts   bool   // tether starts
		warn     string // a warning tether gives ("" = none at all)
		errText  string // part of the error when tether refuses
		check    check
	}{
		{key: "ShellCommand listed", file: `{"ShellCommand": "/bin/sh"}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "ShellCommand", c.ShellCommand, "/bin/sh") }},
		{key: "ShellCommand absent", file: `{}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "ShellCommand", c.ShellCommand, "/bin/sh") }},
		{key: "ShellCommand not in shells", file: `{"ShellCommand": "/bin/true"}`, errText: "ShellCommand: /bin/true is not listed"},
		{key: "ShellCommand relative", file: `{"ShellCommand": "sh"}`, errText: `ShellCommand: "sh" is not an absolute path`},
		{key: "ShellArguments absent", file: `{}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "ShellArguments", c.ShellArguments, []string{"--login"}) }},
		{key: "ShellArguments null", file: `{"ShellArguments": null}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "ShellArguments", c.ShellArguments, []string{"--login"}) }},
		{key: "ShellArguments empty", file: `{"ShellArguments": []}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "ShellArguments", c.ShellArguments, []string{}) }},
		{key: "User", file: `{"user": "nobody"}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "User", c.User, "nobody") }},
		{key: "User missing", file: `{"User": ""}`, errText: "User: required"},
		{key: "User unknown", file: `{"User": "no-such-user-here"}`, errText: "User: user: unknown user no-such-user-here"},
		{key: "Terminal.Width/Height", file: `{"Terminal": {"Width": 132, "Height": 0}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "Terminal", c.Terminal, TerminalConfig{Width: 132, Height: 40}) }},
		{key: "Terminal.Width overflow", file: `{"Terminal": {"Width": 70000}}`, errText: "70000 is not an integer in 0..65535"},
		{key: "Terminal.Disable", file: `{"Terminal": {"Disable": true}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "Disable", c.Terminal.Disable, true) }},
		{key: "Sessions.StopExpired false", file: `{"Sessions": {"StopExpired": false, "ExpireAfter": 60, "ExpireAfterIdle": 30}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) {
				eq(t, "timeouts", [2]time.Duration{c.AbsoluteTimeout(), c.IdleTimeout()}, [2]time.Duration{0, 0})
			}},
		{key: "Sessions.ExpireAfter", file: `{"Sessions": {"ExpireAfter": 3600}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) {
				eq(t, "timeouts", [2]time.Duration{c.AbsoluteTimeout(), c.IdleTimeout()}, [2]time.Duration{time.Hour, 0})
			}},
		{key: "Sessions.ExpireAfterIdle default", file: `{"Sessions": {"StopExpired": true}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "idle", c.IdleTimeout(), 600*time.Second) }},
		{key: "Sessions.MaxPerUser 0", file: `{"Sessions": {"MaxPerUser": 0}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "MaxPerUser", c.Sessions.MaxPerUser, uint32(1)) }},
		{key: "Sessions.MaxPerUser 16", file: `{"Sessions": {"MaxPerUser": 16}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) { eq(t, "MaxPerUser", c.Sessions.MaxPerUser, uint32(16)) }},
		{key: "Sessions.MaxPerUser 17", file: `{"User": "root", "Sessions": {"MaxPerUser": 17}}`, upstream: true, starts: true,
			warn: "Sessions.MaxPerUser 17 is larger than the device limit Sessions.MaxTotal (16, not set); a user can open at most 16 sessions, as with mender-connect",
			check: func(t *testing.T, c *Config) {
				eq(t, "limits", [2]uint32{c.Sessions.MaxPerUser, c.Sessions.MaxTotal}, [2]uint32{16, 16})
			}},
		{key: "Sessions.MaxPerUser 20", file: `{"User": "root", "Sessions": {"MaxPerUser": 20}}`, upstream: true, starts: true,
			warn: "Sessions.MaxPerUser 20 is larger than the device limit",
			check: func(t *testing.T, c *Config) {
				eq(t, "limits", [2]uint32{c.Sessions.MaxPerUser, c.Sessions.MaxTotal}, [2]uint32{16, 16})
			}},
		// MaxTotal is tether's key; a file stating both contradicts itself.
		{key: "Sessions.MaxPerUser over MaxTotal", file: `{"Sessions": {"MaxPerUser": 20, "MaxTotal": 8}}`, upstream: true,
			errText: "Sessions.MaxPerUser: 20 is larger than Sessions.MaxTotal (8)"},
		{key: "Limits", file: `{"Limits": {"Enabled": true, "FileTransfer": {"Chroot": "/data", "FollowSymLinks": true, "AllowOverwrite": true,
			"OwnerPut": "a", "GroupPut": "b", "OwnerGet": ["c"], "GroupGet": ["d"], "Umask": "0022", "MaxFileSize": 10,
			"Counters": {"MaxBytesTxPerMinute": 1, "MaxBytesRxPerMinute": 2}, "AllowSuid": true, "RegularFilesOnly": true,
			"PreserveMode": false, "PreserveOwner": false}}}`, upstream: true, starts: true,
			check: func(t *testing.T, c *Config) {
				eq(t, "Limits", c.Limits, LimitsConfig{Enabled: true, FileTransfer: FileTransferLimits{
					Chroot: "/data", FollowSymLinks: true, AllowOverwrite: true, OwnerPut: "a", GroupPut: "b",
					OwnerGet: []string{"c"}, GroupGet: []string{"d"}, Umask: "0022", MaxFileSize: 10,
					Counters: RateLimits{MaxBytesTxPerMinute: 1, MaxBytesRxPerMinute: 2}, AllowSuid: true, RegularFilesOnly: true,
				}})
			}},
		{key: "FileTransfer/PortForward/MenderClient.Disable", file: `{"FileTransfer": {"Disable": true}, "PortForward": {"Disable": true}, "MenderClient": {"Disable": true}}`,
			upstream: true, starts: true,
			check: func(t *testing.T, c *Config) {
				eq(t, "Disable", [3]bool{c.FileTransfer.Disable, c.PortForward.Disable, c.MenderClient.Disable}, [3]bool{true, true, true})
			}},
		{key: "ReconnectIntervalSeconds", file: `{"ReconnectIntervalSeconds": 1}`, upstream: true, starts: true,
			warn: "ReconnectIntervalSeconds field is unused since mender-connect 2.0, ignoring.",
			check: func(t *testing.T, c *Config) {
				eq(t, "Reconnect", c.Reconnect, Default().Reconnect)
			}},
		{key: "ServerURL", file: `{"ServerURL": "https://hosted.mender.io"}`, upstream: true, starts: true,
			warn:  "ServerURL field is deprecated, ignoring.",
			check: func(t *testing.T, c *Config) { eq(t, "Auth.Source", c.Auth.Source, AuthSourceDBus) }},
		{key: "ServerURL without scheme", file: `{"ServerURL": "hosted.mender.io"}`, upstream: true, starts: true,
			warn: "ServerURL field is deprecated, ignoring."},
		{key: "Servers[].ServerURL", file: `{"Servers": [{"ServerURL": "https://a"}, {"ServerURL": "https://b"}]}`, upstream: true, starts: true,
			warn: "Servers field is deprecated, ignoring."},
		{key: "ClientProtocol", file: `{"ClientProtocol": "https"}`, upstream: true, starts: true,
			warn: "ClientProtocol field is deprecated, ignoring."},
		{key: "HttpsClient", file: `{"HttpsClient": {"Certificate": "/gone.crt", "Key": "/gone.key", "SSLEngine": "x"}}`, upstream: true, starts: true,
			warn: "HttpsClient field is deprecated, ignoring."},
		{key: "SkipVerify", file: `{"SkipVerify": true}`, upstream: true, starts: true,
			warn:  "SkipVerify field is deprecated, ignoring.",
			check: func(t *testing.T, c *Config) { eq(t, "Link.InsecureSkipVerify", c.Link.InsecureSkipVerify, false) }},
		{key: "ServerCertificate", file: `{"ServerCertificate": "/path/that/is/gone.pem"}`, upstream: true, starts: true,
			warn:  "ServerCertificate field is deprecated, ignoring.",
			check: func(t *testing.T, c *Config) { eq(t, "Link.CAFile", c.Link.CAFile, "") }},
		{key: "Debug/Trace (not read upstream)", file: `{"Debug": true, "Trace": true}`, upstream: true, starts: true,
			warn:  `unknown configuration key "Debug"`,
			check: func(t *testing.T, c *Config) { eq(t, "Log.Level", c.Log.Level, "info") }},
		{key: "wrong type", file: `{"Sessions": {"MaxPerUser": "2"}}`, errText: `"Sessions.MaxPerUser": expected a number, got a string`},
		{key: "syntax error", file: `{"User": "nobody",}`, errText: "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			clearEnv(t)
			file := tt.file
			if !strings.Contains(strings.ToLower(file), `"user"`) {
				file = `{"User": "nobody", ` + strings.TrimPrefix(file, "{")
				file = strings.Replace(file, ", }", "}", 1)
			}
			cfg, warnings, _, err := loadFiles(t, file, "", shellsFile(t))
			if tt.starts && !tt.upstream {
				t.Fatal("table error: tether must not accept more than upstream here")
			}
			if tt.upstream && !tt.starts && !strings.Contains(tt.file, "MaxTotal") {
				t.Fatal("table error: a file upstream accepts must start tether (only tether's own keys may refuse)")
			}
			if (err == nil) != tt.starts {
				t.Fatalf("starts = %v, want %v (error: %v, warnings %q)", err == nil, tt.starts, err, warnings)
			}
			if err != nil && !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q lacks %q", err, tt.errText)
			}
			switch {
			case tt.warn == "" && len(warnings) != 0:
				t.Errorf("warnings %q, want none", warnings)
			case tt.warn != "":
				n := 0
				for _, w := range warnings {
					if strings.Contains(w, tt.warn) {
						n++
					}
				}
				if n != 1 || (len(warnings) != 1 && !strings.Contains(tt.file, "Trace")) {
					t.Errorf("warnings %q, want exactly one containing %q", warnings, tt.warn)
				}
			}
			if tt.check != nil && cfg != nil {
				tt.check(t, cfg)
			}
		})
	}
}

// TestLegacyTLSKeysNeverWeaken checks that upstream's TLS keys, from a file
// or from the environment, leave verification on and add no CA, while
// tether's own keys work.
func TestLegacyTLSKeysNeverWeaken(t *testing.T) {
	clearEnv(t)
	cfg, _, _, err := loadFiles(t, `{"User": "nobody", "SkipVerify": true, "skipverify": true, "ServerCertificate": "/etc/passwd"}`,
		`{"SkipVerify": true}`, shellsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Link", [2]any{cfg.Link.InsecureSkipVerify, cfg.Link.CAFile}, [2]any{false, ""})

	t.Setenv("TETHER_SKIPVERIFY", "true")
	_, warnings, _, err := loadFiles(t, `{"User": "nobody"}`, "", shellsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "warnings", warnings, []string{`unknown environment variable "TETHER_SKIPVERIFY" (no such configuration key)`})

	clearEnv(t)
	t.Setenv("TETHER_LINK_INSECURESKIPVERIFY", "true")
	cfg, _, _, err = loadFiles(t, `{"User": "nobody"}`, "", shellsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Link.InsecureSkipVerify", cfg.Link.InsecureSkipVerify, true)
}
