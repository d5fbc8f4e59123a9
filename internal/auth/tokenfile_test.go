package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tether-agent/tether/internal/auth"
)

// A token file is used only if nobody but root or the daemon's user can
// have chosen its content.
func TestStaticTokenFileTrust(t *testing.T) {
	const tok = secretPrefix + "file"
	tests := []struct {
		name string
		// setup makes dir/token (or something in its place) and returns
		// the path to configure.
		setup   func(t *testing.T, dir string) string
		refused string // "" = the token is used
		warned  string // a warning logged though the token is used
	}{
		{"private file", func(t *testing.T, dir string) string {
			return writeToken(t, dir, "token", tok, 0o600)
		}, "", ""},
		{"readable by others: used, with a warning", func(t *testing.T, dir string) string {
			return writeToken(t, dir, "token", tok, 0o644)
		}, "", "readable by other users"},
		{"symlink out of its directory", func(t *testing.T, dir string) string {
			other := filepath.Join(dir, "other")
			if err := os.Mkdir(other, 0o700); err != nil {
				t.Fatal(err)
			}
			target := writeToken(t, other, "root-only", tok, 0o600)
			sub := filepath.Join(dir, "secrets")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(sub, "token")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "symbolic link leading out of its directory", ""},
		{"relative symlink out of its directory", func(t *testing.T, dir string) string {
			writeToken(t, dir, "root-only", tok, 0o600)
			sub := filepath.Join(dir, "secrets")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(sub, "token")
			if err := os.Symlink("../root-only", link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "symbolic link leading out of its directory", ""},
		{"a secret volume: token -> ..data/token inside the directory", func(t *testing.T, dir string) string {
			ts := filepath.Join(dir, "..2026_12_01_00_00_00.1")
			if err := os.Mkdir(ts, 0o755); err != nil {
				t.Fatal(err)
			}
			writeToken(t, ts, "token", tok, 0o600)
			if err := os.Symlink("..2026_12_01_00_00_00.1", filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(dir, "token")
			if err := os.Symlink("..data/token", link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "", ""},
		{"world-writable file", func(t *testing.T, dir string) string {
			return writeToken(t, dir, "token", tok, 0o666)
		}, "writable by group or others", ""},
		{"group-writable file", func(t *testing.T, dir string) string {
			return writeToken(t, dir, "token", tok, 0o620)
		}, "writable by group or others", ""},
		{"world-writable directory", func(t *testing.T, dir string) string {
			sub := filepath.Join(dir, "open")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			p := writeToken(t, sub, "token", tok, 0o600)
			if err := syscall.Chmod(sub, 0o1777); err != nil { // sticky, as /tmp
				t.Fatal(err)
			}
			return p
		}, "is writable by group or others (mode 1777)", ""},
		{"a FIFO in its place", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "token")
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "not a regular file", ""},
		{"owned by another user", func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Fatal("this case needs root (chown); CI runs the tests as root")
			}
			p := writeToken(t, dir, "token", tok, 0o600)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return p
		}, "owned by uid 65534", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.setup(t, t.TempDir())
			log, logs := newLogger(t)
			src := auth.NewStatic(log, staticOpts(path))
			runSource(t, src)
			want := auth.Credentials{ServerURL: "https://s.example"}
			if tt.refused == "" {
				want.Token = tok
			}
			expectNext(t, src, want)
			out := logs.String()
			if tt.refused != "" && (!strings.Contains(out, "token file unusable") || !strings.Contains(out, tt.refused)) {
				t.Fatalf("refusal not logged with %q:\n%s", tt.refused, out)
			}
			if tt.warned != "" && !strings.Contains(out, tt.warned) {
				t.Fatalf("no warning %q:\n%s", tt.warned, out)
			}
			if tt.refused == "" && tt.warned == "" && strings.Contains(out, "level=WARN") {
				t.Fatalf("unexpected warning:\n%s", out)
			}
		})
	}
}

func writeToken(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is filtered by the umask; set it exactly.
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}
