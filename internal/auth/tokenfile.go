package auth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// openTokenFile opens a token file only if nobody but root (or the
// daemon's own user) could have put its content there: a regular file
// beneath its directory (no symbolic link out of it), and it and its
// directory owned by root or the daemon's uid and writable by nobody else. A token
// file in a directory others can write would let a local user make the
// daemon send any file's first line to the server as its Bearer token.
//
// readableByOthers reports a file that others can read: the token leaks,
// but nothing is taken over, so that is a warning, not a refusal.
func openTokenFile(path string) (f *os.File, readableByOthers bool, err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, &os.PathError{Op: "open directory", Path: dir, Err: err}
	}
	defer unix.Close(dfd)
	var dst unix.Stat_t
	if err := unix.Fstat(dfd, &dst); err != nil {
		return nil, false, fmt.Errorf("directory %s: %w", dir, err)
	}
	if err := trustedOwnerAndMode("directory "+filepath.Clean(dir), &dst); err != nil {
		return nil, false, err
	}
	fd, err := openBeneath(dfd, name)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return nil, false, errors.New("is a symbolic link leading out of its directory; refusing to follow it")
		}
		return nil, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f = os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, false, errors.New("not a regular file")
	}
	if err := trustedOwnerAndMode("file", &st); err != nil {
		f.Close()
		return nil, false, err
	}
	return f, st.Mode&0o044 != 0, nil
}

// openBeneath opens name in the trusted directory dfd. Symbolic links are
// followed only while they stay beneath it (a Kubernetes secret volume
// presents each key as token -> ..data/token, all inside the volume): only
// root or the daemon's user could have made them, since the directory is
// theirs alone. A link leading out fails (EXDEV). Kernels before 5.6 have
// no openat2, so there no symbolic link is followed at all.
// O_NONBLOCK: a FIFO planted in place of the file must not hang the
// poller; it is refused as not a regular file.
func openBeneath(dfd int, name string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY
	fd, err := unix.Openat2(dfd, name, &unix.OpenHow{Flags: flags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		// No openat2 (or a seccomp filter that refuses it).
		return unix.Openat(dfd, name, flags|unix.O_NOFOLLOW, 0)
	}
	return fd, err
}

func trustedOwnerAndMode(what string, st *unix.Stat_t) error {
	if uid := st.Uid; uid != 0 && int(uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, not root or the daemon's user", what, uid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o)", what, st.Mode&0o7777)
	}
	return nil
}

// readLimited reads at most max+1 bytes, so the caller can tell an
// oversized file from one of exactly max bytes.
func readLimited(f *os.File, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if errors.Is(err, syscall.EAGAIN) {
		return nil, errors.New("not readable without blocking")
	}
	return b, err
}
