package handover

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The daemon execs only a binary that nobody but root could have written.
func TestCheckBinary(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if uid != 0 {
			if err := os.Chown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	tests := []struct {
		name, path, want string
	}{
		{"good", mk("good", 0o755, 0), ""},
		{"group-writable", mk("gw", 0o775, 0), "writable by group or others"},
		{"world-writable", mk("ww", 0o757, 0), "writable by group or others"},
		{"not executable", mk("nx", 0o644, 0), "not executable"},
		{"someone else's", mk("other", 0o755, 65534), "not owned by root"},
		{"directory", dir, "not a regular file"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckBinary(tt.path)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("CheckBinary: %v, want %q", err, tt.want)
			}
		})
	}
}

// An upgrade request is taken once, and only from a private file of the
// daemon's user in the records' directory.
func TestTakeUpgrade(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, req string)
		want    string // path, or "error: ..."
	}{
		{"none: the daemon's own binary", func(*testing.T, string) {}, "/usr/bin/tether"},
		{"requested", func(t *testing.T, req string) { write(t, req, "/opt/tether-2", 0o600) }, "/opt/tether-2"},
		{"relative path", func(t *testing.T, req string) { write(t, req, "tether-2", 0o600) }, "error: not an absolute path"},
		{"readable by others", func(t *testing.T, req string) { write(t, req, "/opt/tether-2", 0o644) }, "error: not a private file"},
		{"someone else's", func(t *testing.T, req string) {
			write(t, req, "/opt/tether-2", 0o600)
			if err := os.Chown(req, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "error: not a private file"},
		{"symlink", func(t *testing.T, req string) {
			target := filepath.Join(t.TempDir(), "elsewhere")
			write(t, target, "/opt/tether-2", 0o600)
			if err := os.Symlink(target, req); err != nil {
				t.Fatal(err)
			}
		}, "error: upgrade request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := OpenDir(filepath.Join(t.TempDir(), "sessions"))
			if err != nil {
				t.Fatal(err)
			}
			req := filepath.Join(d.Path(), upgradeRequest)
			tt.prepare(t, req)
			got, err := d.TakeUpgrade("/usr/bin/tether")
			if err != nil {
				got = "error: " + err.Error()
			}
			if !strings.HasPrefix(got, tt.want) && !(strings.HasPrefix(tt.want, "error: ") && strings.Contains(got, strings.TrimPrefix(tt.want, "error: "))) {
				t.Fatalf("TakeUpgrade = %q, want %q", got, tt.want)
			}
			if _, err := os.Lstat(req); !os.IsNotExist(err) {
				t.Fatal("the request was not taken: a second SIGUSR2 would act on it again")
			}
		})
	}
}

func write(t *testing.T, p, s string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}
