package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	user := "nobody"
	if os.Geteuid() != 0 {
		user = os.Getenv("USER")
	}
	if err := os.WriteFile(good, []byte(`{"shellcommand":"/bin/sh","USER":"`+user+`","Auth":{"Source":"static","Token":"s3cr3t-token","TokenFile":""},"ServerURL":"http://127.0.0.1:1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte(`{"User":"`+user+`","Sessions":{"MaxTotal":0},"Typo":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(dir, "legacy.conf")
	if err := os.WriteFile(legacy, []byte(`{"User":"`+user+`","Sessions":{"MaxPerUser":20},"SkipVerify":true,"ServerCertificate":"/path/that/is/gone.pem"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(dir, "none.conf")
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string
		stderr     []string
		notOutputs []string
	}{
		{name: "version", args: []string{"version"}, stdout: []string{"unknown\truntime: " + runtime.Version()}},
		{name: "--version", args: []string{"--version"}, stdout: []string{"runtime: go"}},
		{name: "-v", args: []string{"-v"}, stdout: []string{"runtime: go"}},
		{name: "help", args: []string{"help"}, stdout: []string{"check-config", "--fallback-config"}},
		{name: "--help", args: []string{"--help"}, stdout: []string{"usage: tether"}},
		{name: "-h", args: []string{"-h"}, stdout: []string{"usage: tether"}},
		// Without the help check these would start (or try to start) the daemon.
		{name: "daemon --help", args: []string{"-c", none, "-b", none, "daemon", "--help"}, stdout: []string{"usage: tether", "daemon"}, notOutputs: []string{"no configuration"}},
		{name: "daemon -h", args: []string{"-c", none, "-b", none, "daemon", "-h"}, stdout: []string{"usage: tether"}},
		{name: "check-config -h", args: []string{"-c", good, "-b", none, "check-config", "-h"}, stdout: []string{"usage: tether"}, notOutputs: []string{"<redacted>"}},
		{name: "version --help", args: []string{"version", "--help"}, stdout: []string{"usage: tether"}, notOutputs: []string{"runtime:"}},
		{name: "argument after the command", args: []string{"-c", none, "-b", none, "daemon", "now"}, code: 1, stderr: []string{`daemon takes no arguments, got "now"`}},
		{name: "no command", args: nil, code: 1, stderr: []string{"usage:"}},
		{name: "unknown command", args: []string{"dance"}, code: 1, stderr: []string{`unknown command "dance"`}},
		{name: "unknown flag", args: []string{"--nope", "daemon"}, code: 1},
		{name: "upgrade without a path", args: []string{"upgrade"}, code: 1, stderr: []string{"tether upgrade PATH"}},
		{name: "upgrade --help", args: []string{"upgrade", "--help"}, stdout: []string{"upgrade PATH"}},
		{name: "upgrade of a missing binary", args: []string{"upgrade", filepath.Join(dir, "no-tether")}, code: 1, stderr: []string{"upgrade: new binary", "no-tether"}},
		{
			name: "check-config redacts the token", args: []string{"-c", good, "-b", none, "check-config"},
			stdout: []string{`"ShellCommand": "/bin/sh"`, `"<redacted>"`, `"User": "` + user + `"`}, notOutputs: []string{"s3cr3t-token"},
		},
		{
			name: "check-config reports every problem", args: []string{"--config", bad, "--fallback-config", none, "check-config"}, code: 1,
			stderr: []string{`unknown configuration key "Typo"`, "Sessions.MaxTotal: 0 is out of range"},
		},
		{
			name: "check-config accepts what mender-connect accepts", args: []string{"-c", legacy, "-b", none, "check-config"},
			stdout: []string{`"MaxPerUser": 16`, `"InsecureSkipVerify": false`, `"CAFile": ""`},
			stderr: []string{"warning: Sessions.MaxPerUser 20 is larger", "warning: SkipVerify field is deprecated, ignoring.", "warning: ServerCertificate field is deprecated, ignoring."},
		},
		{
			name: "daemon refuses an invalid config", args: []string{"-c", bad, "-b", none, "daemon"}, code: 1,
			stderr: []string{"configuration is invalid", "Sessions.MaxTotal"},
		},
		{
			name: "missing files", args: []string{"-c", filepath.Join(dir, "nope.conf"), "-b", none, "check-config"}, code: 1,
			stderr: []string{"nope.conf", "TETHER_USER"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tt.args, &out, &errOut)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errOut.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut.String())
				}
			}
			for _, s := range tt.notOutputs {
				if strings.Contains(out.String()+errOut.String(), s) {
					t.Errorf("output shows %q", s)
				}
			}
		})
	}
}
