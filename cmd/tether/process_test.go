package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCloseInheritedFDs(t *testing.T) {
	var p [2]int
	// syscall.Pipe (not Pipe2) leaves both ends inheritable, as a parent
	// process might.
	syscall.ForkLock.Lock()
	err := syscall.Pipe(p[:])
	syscall.ForkLock.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	if err := closeInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	for _, fd := range p {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("fd %d is not close-on-exec", fd)
		}
	}
}

func TestSetMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	tests := []struct {
		name       string
		env        string
		wantLimit  int64 // 0: derived, within the bounds
		wantSource string
	}{
		{"derived", "", 0, ""},
		{"GOMEMLIMIT wins", "48MiB", 48 << 20, "GOMEMLIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tt.env)
			if tt.env != "" {
				// The runtime reads GOMEMLIMIT at start; stand in for it.
				debug.SetMemoryLimit(tt.wantLimit)
			}
			limit, source := setMemoryLimit()
			if tt.wantLimit == 0 {
				if limit < minDerivedMemoryLimit || limit > maxDerivedMemoryLimit {
					t.Fatalf("derived limit %d outside [%d, %d] (%s)", limit, minDerivedMemoryLimit, maxDerivedMemoryLimit, source)
				}
			} else if limit != tt.wantLimit || source != tt.wantSource {
				t.Fatalf("limit %d from %q, want %d from %q", limit, source, tt.wantLimit, tt.wantSource)
			}
			if got := debug.SetMemoryLimit(-1); got != limit {
				t.Fatalf("runtime limit %d, reported %d", got, limit)
			}
		})
	}
}

// The daemon warns at start of a configuration file that exposes the
// token (the configuration is invalid here, so it goes no further).
func TestDaemonWarnsOfReadableTokenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tether.conf")
	if err := os.WriteFile(p, []byte(`{"User":"nobody","Sessions":{"MaxTotal":0},"Auth":{"Source":"static","Token":"s3cr3t"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-c", p, "-b", filepath.Join(dir, "none.conf"), "daemon"}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if out := stderr.String(); !strings.Contains(out, "holds Auth.Token and is readable by other users") || strings.Contains(out, "s3cr3t") {
		t.Fatalf("stderr:\n%s", out)
	}
}
