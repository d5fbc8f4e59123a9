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
//
// With FollowSymLinks, a path the kernel refuses that way is resolved
// again by follow, one component at a time, so that an absolute symlink
// whose target lies beneath the Chroot (devices are full of
// /data/current -> /data/releases/v7) is followed, as upstream does.
type resolver struct {
	root      string // cleaned Chroot; "" = none
	realRoot  string // root with its own symlinks resolved, when that differs
	noSymlink bool
	// openat2 is 1 while the kernel has it, -1 once it said ENOSYS
	// (kernels before 5.6), then the component walk is used.
	openat2 *atomic.Int32
}

func newResolver(chroot string, followSymlinks bool) resolver {
	r := resolver{noSymlink: !followSymlinks, openat2: new(atomic.Int32)}
	if chroot != "" {
		r.root = filepath.Clean(chroot)
		// Absolute link targets may name the root by its real path too
		// (Chroot /data with /data -> /mnt/data, a link to /mnt/data/x).
		// This only translates names; the opening stays beneath the root.
		if real, err := filepath.EvalSymlinks(r.root); err == nil && real != r.root {
			r.realRoot = real
		}
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
	fd, err := r.openAt(dirfd, rel, path, flags, mode)
	if r.noSymlink || !isDenial(err) {
		return fd, err
	}
	// The kernel refused a symlink on the way (an absolute one, one that
	// leads out, a loop, or any one on a kernel without openat2): follow
	// decides. Its answer is opened with no symlink allowed at all, so a
	// link swapped in since is refused, not followed; a few retries
	// absorb a rename that raced with the lookup.
	// (Without a Chroot and with symlinks allowed nothing is a denial:
	// dirfd is the root's here.)
	strict := r
	strict.noSymlink = true
	for try := 0; ; try++ {
		res, err := r.follow(dirfd, rel, path, flags&unix.O_NOFOLLOW == 0)
		if err != nil {
			return -1, err
		}
		fd, err = strict.openAt(dirfd, res, path, flags, mode)
		if !errors.Is(err, errFollowLink) || try == 2 {
			return fd, err
		}
	}
}

// maxLinks is the kernel's limit of symlinks in one lookup (MAXSYMLINKS);
// maxSteps bounds the components one lookup may visit (every step opens
// its directory from the root again), so that link targets of many
// components cannot make a lookup cost seconds.
const (
	maxLinks = 40
	maxSteps = 1024
)

// follow resolves rel (relative to the root directory rootfd) as the
// kernel would with the root as "/" for relative links, and with
// absolute links read in the device's own namespace: a target beneath
// the root is followed, one elsewhere is refused. It returns an
// equivalent path relative to rootfd that has no symlink and no "..".
//
// Containment is the kernel's: every directory a component is read in is
// opened from rootfd with RESOLVE_BENEATH and no symlinks (or the
// O_NOFOLLOW walk on kernels without openat2), and the caller opens the
// answer the same way. A ".." pops a component already resolved (it is
// never given to the kernel), so it cannot climb above the root; the
// root's path is used only to translate an absolute target into a
// relative one. followLast says whether a symlink as the last component
// is followed too.
//
// Hand-written rather than cyphar/filepath-securejoin: that library reads
// an absolute target against the root, as a chroot would, so with Chroot
// /data a link to /data/releases/v7 would mean /data/data/releases/v7.
// Here, as for upstream and the device's own programs, a target means
// what it says in the device's namespace.
func (r resolver) follow(rootfd int, rel, shown string, followLast bool) (string, error) {
	strict := r
	strict.noSymlink = true
	todo := strings.Split(rel, "/")
	var done []string
	links, steps := 0, 0
	buf := make([]byte, unix.PathMax)
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		if steps++; steps > maxSteps {
			return "", &pathError{op: "resolve", path: shown, err: unix.ENAMETOOLONG}
		}
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", errOutsideChroot
			}
			done = done[:len(done)-1]
			continue
		}
		if len(todo) == 0 && !followLast {
			done = append(done, c)
			break
		}
		dirfd, err := strict.openAt(rootfd, "./"+strings.Join(done, "/"), shown, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return "", err
		}
		n, err := unix.Readlinkat(dirfd, c, buf)
		unix.Close(dirfd)
		switch {
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT):
			// Not a symlink, or nothing there (yet: an upload's target):
			// the final open says what it is.
			done = append(done, c)
			continue
		case err != nil:
			return "", &pathError{op: "readlink", path: shown, err: err}
		case n >= len(buf):
			return "", &pathError{op: "readlink", path: shown, err: unix.ENAMETOOLONG}
		}
		if links++; links > maxLinks {
			return "", errFollowLink
		}
		target := string(buf[:n])
		if strings.HasPrefix(target, "/") {
			inside, ok := r.beneath(target)
			if !ok {
				return "", errOutsideChroot
			}
			done, target = done[:0], inside
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return "./" + strings.Join(done, "/"), nil
}

// beneath translates an absolute link target into a path relative to the
// root, if the target names something beneath it.
func (r resolver) beneath(target string) (string, bool) {
	root := r.root
	if root == "" {
		root = "/"
	}
	for _, p := range []string{root, r.realRoot} {
		switch {
		case p == "":
		case p == "/":
			return "." + target, true
		case target == p:
			return ".", true
		case strings.HasPrefix(target, p+"/"):
			return "." + target[len(p):], true
		}
	}
	return "", false
}

// realPath is the absolute path that path leads to, its last component
// followed too when it is a symlink and symlinks may be followed: where an
// upload through a link to a file must land.
func (r resolver) realPath(path string) (string, error) {
	rel, err := r.rel(path)
	if err != nil {
		return "", err
	}
	root := r.root
	if root == "" {
		root, rel = "/", "."+rel
	}
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &pathError{op: "open chroot", path: root, err: err}
	}
	defer unix.Close(rootfd)
	res, err := r.follow(rootfd, rel, path, true)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, res), nil
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
// time with O_NOFOLLOW, so that the walk itself never follows a symlink
// beneath a root; open then has follow resolve the link as text and
// opens the symlink-free answer with this same walk. (Without
// RESOLVE_BENEATH a directory renamed out of the root between two steps
// is not noticed, for any path.) Without a root and with symlinks allowed
// the path is opened as is.
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
