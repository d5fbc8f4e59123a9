package handover

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// An upgrade without systemd: `tether upgrade PATH` leaves the path in
// the records' directory (root's alone) and sends the daemon, whose pid
// is in the runtime directory's pidFile, SIGUSR2. The daemon takes the
// request, checks the binary, hands its sessions over and execs it in
// place. A SIGUSR2 with no request re-executes the binary the daemon was
// started from, as found at that path now (an update that replaced it).
const (
	upgradeRequest = "upgrade-request"
	pidFile        = "tether.pid"
)

// WritePID records the daemon's pid for `tether upgrade`.
func WritePID(runtimeDir string) error {
	p := filepath.Join(runtimeDir, pidFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// RemovePID removes the pid file if it still names this process.
func RemovePID(runtimeDir string) {
	p := filepath.Join(runtimeDir, pidFile)
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(p)
	}
}

// RequestUpgrade asks the running daemon to exec the binary at path, and
// waits up to wait for it to take the request. It returns the daemon's
// pid.
func RequestUpgrade(runtimeDir, path string, wait time.Duration) (int, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	if err := CheckBinary(abs); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(runtimeDir, pidFile))
	if err != nil {
		return 0, fmt.Errorf("is the daemon running? %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s: bad pid %q", filepath.Join(runtimeDir, pidFile), strings.TrimSpace(string(b)))
	}
	d, err := OpenDir(SessionsDir(runtimeDir))
	if err != nil {
		return 0, err
	}
	req := filepath.Join(d.path, upgradeRequest)
	tmp := req + ".tmp"
	if err := os.WriteFile(tmp, []byte(abs), 0o600); err != nil {
		return 0, fmt.Errorf("upgrade request: %w", err)
	}
	if err := os.Rename(tmp, req); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("upgrade request: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		os.Remove(req)
		return 0, fmt.Errorf("signal the daemon (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if _, err := os.Lstat(req); errors.Is(err, os.ErrNotExist) {
			return pid, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.Remove(req)
	return 0, fmt.Errorf("the daemon (pid %d) did not take the upgrade request within %s", pid, wait)
}

// TakeUpgrade returns the binary an upgrade asked for, removing the
// request, or self when there is none (a bare SIGUSR2).
func (d *Dir) TakeUpgrade(self string) (string, error) {
	req := filepath.Join(d.path, upgradeRequest)
	f, err := os.OpenFile(req, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return self, nil
	}
	if err != nil {
		os.Remove(req)
		return "", fmt.Errorf("upgrade request: %w", err)
	}
	defer os.Remove(req)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("upgrade request: %w", err)
	}
	if st, _ := fi.Sys().(*syscall.Stat_t); !fi.Mode().IsRegular() || st == nil || int(st.Uid) != d.uid || fi.Mode().Perm()&0o077 != 0 {
		return "", errors.New("upgrade request: not a private file of the daemon's user")
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("upgrade request: %w", err)
	}
	p := string(b)
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("upgrade request: %q is not an absolute path", p)
	}
	return p, nil
}

// CheckBinary refuses a binary that the daemon, running as root, must not
// exec: not a regular executable file, or one that a user other than the
// daemon's (root) could have written.
func CheckBinary(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("new binary: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("new binary %s: not a regular file", path)
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("new binary %s: not executable", path)
	case st == nil || (st.Uid != 0 && int(st.Uid) != os.Geteuid()):
		return fmt.Errorf("new binary %s: not owned by root", path)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("new binary %s: writable by group or others (mode %04o)", path, fi.Mode().Perm())
	}
	return nil
}
