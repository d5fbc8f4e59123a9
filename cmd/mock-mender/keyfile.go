package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// loadOrCreateKey reads a hex signing key, or creates a random one (0600)
// when the file does not exist. Whoever can write the key can mint tokens
// for any user or device, so an existing file is used only if it is a
// regular file (not a symlink: it is opened without following one), owned
// by the caller and of mode 0600 or narrower. A key someone else planted,
// say in /tmp, is refused.
func loadOrCreateKey(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return createKey(path)
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("key file %s is a symbolic link; refusing to follow it", path)
	case err != nil:
		return nil, fmt.Errorf("reading key file: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("key file %s is not a regular file", path)
	}
	if int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("key file %s is owned by uid %d, not by this user (%d)", path, st.Uid, os.Geteuid())
	}
	if perm := st.Mode & 0o7777; perm&^0o600 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o; it must be 0600 or narrower (chmod 600 it)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("key file %s: not hex: %w", path, err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("key file %s: key of %d bytes is too short (want ≥ 16)", path, len(key))
	}
	return key, nil
}

// createKey writes a new random key to a file that must not exist yet
// (O_EXCL also refuses a symlink planted at the path).
func createKey(path string) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating signing key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating key file: %w", err)
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(key)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	return key, nil
}
