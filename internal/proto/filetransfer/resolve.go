package filetransfer

import (
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Denial reasons (docs/protocol.md §5.4); they are sent as
// "access denied: <reason>".
var (
	errOutsideChroot = errors.New("the target file path is outside chroot")
	errFollowLink    = errors.New("forbidden to follow the link")
)

// resolver opens paths beneath a root. With a Chroot every path is
// resolved by the kernel relative to the root directory (openat2 with
// RESOLVE_BENEATH): a "..", an absolute symlink or a relative one that
// climbs out fails during the lookup itself, so there is no window
// between a check and the open. Magic links (/proc/self/root, /proc/N/fd/M)
// are never followed; without FollowSymLinks no symlink is.
type resolver struct {
	root      string // cleaned Chroot; "" = none
	noSymlink bool
	// openat2 is 1 while the kernel has it, -1 once it said ENOSYS
	// (kernels before 5.6), then the component walk is used.
	openat2 *atomic.Int32
}

func newResolver(chroot string, followSymlinks bool) resolver {
	r := resolver{noSymlink: !followSymlinks, openat2: new(atomic.Int32)}
	if chroot != "" {
		r.root = filepath.Clean(chroot)
	}
	return r
}

// rel checks path lexically and returns it relative to the root. Paths
// with ".." components are refused under a Chroot whatever they resolve
// to: upstream compared raw strings, so "/data/../etc" passed.
func (r resolver) rel(path string) (string, error) {
	if !strings.HasPrefix(path, "/") {
		return "", errors.New("path must be absolute")
	}
	if r.root == "" {
		return path, nil
	}
	for _, c := range strings.Split(path, "/") {
		if c == ".." {
			return "", errOutsideChroot
		}
	}
	clean := filepath.Clean(path)
	switch {
	case r.root == "/":
		return "." + clean, nil
	case clean == r.root:
		return ".", nil
	case strings.HasPrefix(clean, r.root+"/"):
		return "." + clean[len(r.root):], nil
	}
	return "", errOutsideChroot
}

// open resolves path and opens it with flags (O_CLOEXEC is added). It
// must run inside Identity.do so that the lookup has the user's rights.
func (r resolver) open(path string, flags int, mode uint32) (int, error) {
	rel, err := r.rel(path)
	if err != nil {
		return -1, err
	}
	dirfd := unix.AT_FDCWD
	if r.root != "" {
		dirfd, err = unix.Open(r.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &pathError{op: "open chroot", path: r.root, err: err}
		}
		defer unix.Close(dirfd)
	}
	return r.openAt(dirfd, rel, path, flags, mode)
}

// openAt resolves rel (a path relative to dirfd or an absolute one when
// dirfd is AT_FDCWD) under the resolver's rules.
func (r resolver) openAt(dirfd int, rel, shown string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: unix.RESOLVE_NO_MAGICLINKS}
	if dirfd != unix.AT_FDCWD {
		how.Resolve |= unix.RESOLVE_BENEATH
	}
	if r.noSymlink {
		how.Resolve |= unix.RESOLVE_NO_SYMLINKS
	}
	if r.openat2.Load() >= 0 {
		fd, err := unix.Openat2(dirfd, rel, &how)
		if !errors.Is(err, unix.ENOSYS) {
			r.openat2.Store(1)
			return fd, r.mapErr(shown, err)
		}
		r.openat2.Store(-1)
	}
	return r.walk(dirfd, rel, shown, flags, mode)
}

// walk is the fallback for kernels without openat2: one component at a
// time with O_NOFOLLOW, so that no symlink is ever followed beneath a
// root (those kernels cannot tell one that stays inside from one that
// leads out race-free). Without a root and with symlinks allowed the
// path is opened as is.
func (r resolver) walk(dirfd int, rel, shown string, flags int, mode uint32) (int, error) {
	if dirfd == unix.AT_FDCWD && !r.noSymlink {
		fd, err := unix.Open(rel, flags|unix.O_CLOEXEC, mode)
		return fd, r.mapErr(shown, err)
	}
	if dirfd == unix.AT_FDCWD {
		rel = "." + rel
		root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		defer unix.Close(root)
		dirfd = root
	}
	var comps []string
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			return -1, errOutsideChroot
		}
		comps = append(comps, c)
	}
	if len(comps) == 0 {
		comps = []string{"."}
	}
	cur := dirfd
	closeCur := func() {
		if cur != dirfd {
			unix.Close(cur)
		}
	}
	defer func() { closeCur() }()
	for i, c := range comps {
		if i == len(comps)-1 {
			fd, err := unix.Openat(cur, c, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
			if errors.Is(err, unix.ENOTDIR) && isSymlinkAt(cur, c) {
				err = unix.ELOOP
			}
			if err == nil && flags&unix.O_PATH != 0 {
				// O_PATH|O_NOFOLLOW opens a symlink itself.
				var st unix.Stat_t
				if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					unix.Close(fd)
					err = unix.ELOOP
				}
			}
			return fd, r.mapErr(shown, err)
		}
		next, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOTDIR) && isSymlinkAt(cur, c) {
			err = unix.ELOOP
		}
		if err != nil {
			return -1, r.mapErr(shown, err)
		}
		closeCur()
		cur = next
	}
	return -1, unix.EINVAL // not reached: the loop returns at the last component
}

func isSymlinkAt(dirfd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// mapErr turns the kernel's refusals into upstream's denial texts.
func (r resolver) mapErr(path string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EXDEV) && r.root != "":
		return errOutsideChroot
	case errors.Is(err, unix.ELOOP) && (r.noSymlink || r.root != ""):
		return errFollowLink
	}
	return &pathError{op: "open", path: path, err: err}
}

type pathError struct {
	op, path string
	err      error
}

func (e *pathError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// isDenial reports whether err is a limit's refusal.
func isDenial(err error) bool {
	return errors.Is(err, errOutsideChroot) || errors.Is(err, errFollowLink)
}
