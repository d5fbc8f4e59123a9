package itest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What the daemon's parent leaves it (descriptors, signal dispositions)
// must not reach the remote shells.

// A descriptor the daemon was started with (a supervisor's, a script's)
// never reaches a shell: fd 3 here is open on a root-only file, and the
// shell, running as another user, must not read it.
func TestInheritedDescriptorNotInShells(t *testing.T) {
	secret := "inherited-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e := newEnvWith(t, nil, func(e *env) { e.files = []*os.File{f} })
	e.waitDevice()
	// The daemon itself still has it (it is not ours to close), marked
	// close-on-exec.
	if _, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", e.daemon.Process.Pid)); err != nil {
		t.Fatalf("daemon's fd 3: %v", err)
	}
	term := e.open(adminEmail)
	out := e.run(term, "cat <&3 && echo fd3-readable || echo fd3-refused")
	if strings.Contains(out, secret) || strings.Contains(out, "fd3-readable\r") {
		t.Fatalf("the shell read the daemon's inherited fd 3:\n%s", out)
	}
	if !strings.Contains(out, "fd3-refused") {
		t.Fatalf("no refusal in the output:\n%s", out)
	}
}

// A daemon started with SIGHUP ignored (nohup, some init scripts) and with
// signal 32 ignored (GNU make does that to what it runs) does not pass the
// ignores on: a shell's commands see no ignored signal, and the shell
// itself can be hung up.
func TestShellsDoNotInheritIgnoredSignals(t *testing.T) {
	restore := ignoreSignal(t, 32)
	e := newEnvWith(t, nil, func(e *env) {
		e.wrap = []string{"/bin/sh", "-c", `trap "" HUP; exec "$0" "$@"`}
	})
	restore() // the daemon has it; the rest of the tests should not
	e.waitDevice()
	term := e.open(adminEmail)
	out := e.run(term, "grep SigIgn /proc/self/status; echo shell-$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status)")
	if !strings.Contains(out, "SigIgn:\t0000000000000000") {
		t.Fatalf("a shell's command has ignored signals:\n%s", out)
	}
	i := strings.LastIndex(out, "shell-")
	if i < 0 || len(out) < i+6+16 {
		t.Fatalf("no SigIgn of the shell in:\n%s", out)
	}
	mask, err := strconv.ParseUint(out[i+6:i+6+16], 16, 64)
	if err != nil {
		t.Fatalf("shell SigIgn %q: %v", out[i+6:i+6+16], err)
	}
	if mask&1 != 0 { // bit 0 is signal 1, SIGHUP
		t.Fatalf("the shell ignores SIGHUP (SigIgn %016x)", mask)
	}
}

// ignoreSignal sets sig to SIG_IGN in this process, so that what it starts
// inherits the ignore (a shell cannot ignore 32: glibc refuses it), and
// returns the function that sets SIG_DFL again. The kernel's struct
// sigaction starts with the handler on the architectures these tests run
// on (amd64, arm64), and SIG_IGN is 1.
func ignoreSignal(t *testing.T, sig int) func() {
	t.Helper()
	set := func(handler byte) {
		var act [64]byte
		act[0] = handler
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act[0])), 0, 8, 0, 0); e != 0 {
			t.Fatalf("rt_sigaction(%d): %v", sig, e)
		}
	}
	set(1)
	return func() { set(0) }
}
