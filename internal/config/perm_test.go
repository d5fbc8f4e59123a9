package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPermissionWarnings(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		warn    bool
	}{
		{"token, world-readable", `{"Auth":{"Source":"static","Token":"t0k"}}`, 0o644, true},
		{"token, group-readable, lower-case keys", `{"auth":{"token":"t0k"}}`, 0o640, true},
		{"token, private", `{"Auth":{"Token":"t0k"}}`, 0o600, false},
		{"no token, world-readable", `{"Auth":{"Source":"dbus"}}`, 0o644, false},
		{"not JSON", `nope`, 0o644, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "tether.conf")
			if err := os.WriteFile(p, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			got := PermissionWarnings(LoadOptions{Path: p, FallbackPath: filepath.Join(dir, "missing.conf")})
			if tt.warn != (len(got) == 1) || len(got) > 1 {
				t.Fatalf("warnings %q, want a warning: %v", got, tt.warn)
			}
			if tt.warn && (!strings.Contains(got[0], p) || strings.Contains(got[0], "t0k")) {
				t.Fatalf("warning %q should name the file and not the token", got[0])
			}
		})
	}
}
