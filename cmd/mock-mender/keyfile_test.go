package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKeyTrust(t *testing.T) {
	const hexKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string
		wantErr string // "" = a key is returned
	}{
		{"created when missing", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "key")
		}, ""},
		{"private file", func(t *testing.T, dir string) string {
			return writeKey(t, dir, hexKey, 0o600)
		}, ""},
		{"owner read only", func(t *testing.T, dir string) string {
			return writeKey(t, dir, hexKey, 0o400)
		}, ""},
		{"group-readable", func(t *testing.T, dir string) string {
			return writeKey(t, dir, hexKey, 0o640)
		}, "mode 0640"},
		{"world-writable", func(t *testing.T, dir string) string {
			return writeKey(t, dir, hexKey, 0o666)
		}, "mode 0666"},
		{"symlink to a private key", func(t *testing.T, dir string) string {
			target := writeKey(t, dir, hexKey, 0o600)
			link := filepath.Join(dir, "link")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "symbolic link"},
		{"dangling symlink is not followed to create", func(t *testing.T, dir string) string {
			link := filepath.Join(dir, "link")
			if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "symbolic link"},
		{"owned by someone else", func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Fatal("this case needs root (chown); CI runs the tests as root")
			}
			p := writeKey(t, dir, hexKey, 0o600)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return p
		}, "owned by uid 65534"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.setup(t, dir)
			key, err := loadOrCreateKey(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("loadOrCreateKey: %v, want an error with %q", err, tt.wantErr)
				}
				if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
					t.Fatal("a key was written through the symlink")
				}
				return
			}
			if err != nil || len(key) < 16 {
				t.Fatalf("loadOrCreateKey: %v (%d bytes)", err, len(key))
			}
			again, err := loadOrCreateKey(path)
			if err != nil || string(again) != string(key) {
				t.Fatalf("reloading gives %x, %v; want %x", again, err, key)
			}
		})
	}
}

func writeKey(t *testing.T, dir, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}
