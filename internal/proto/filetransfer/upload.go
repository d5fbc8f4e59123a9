package filetransfer

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/wire"
)

// Mode bits as the server sends them (POSIX, from the octal text) and as
// a Go client might (os.FileMode).
const (
	posixSetuid = 0o4000
	posixSetgid = 0o2000
	goSetuid    = 1 << 23
	goSetgid    = 1 << 22
)

// target is where an upload lands: a directory held open (O_PATH) and a
// name in it. Everything after the lookup is relative to dirfd, so the
// directory cannot be swapped under the transfer.
type target struct {
	dirfd  int
	leaf   string
	exists bool
}

// conflict is a refusal that is not a limit's.
type conflict string

func (c conflict) Error() string { return string(c) }

// deny is a limit's refusal found after the lookup.
type deny string

func (d deny) Error() string { return string(d) }

func validLeaf(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.Contains(s, "/")
}

// locate resolves the upload's directory beneath the root and checks the
// name in it (PROTOCOL.md 2.6 put_file step 2, 2.6.1 steps 3–5). It runs
// as the user.
func (s *session) locate(path string, src *string) (*target, error) {
	dir, leaf := path[:strings.LastIndexByte(path, '/')+1], path[strings.LastIndexByte(path, '/')+1:]
	if dir != "/" {
		dir = strings.TrimSuffix(dir, "/")
	}
	dirfd, err := s.p.res.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	t := &target{dirfd: dirfd, leaf: leaf}
	fail := func(err error) (*target, error) {
		unix.Close(t.dirfd)
		return nil, err
	}
	var st unix.Stat_t
	isDir := leaf == ""
	if !isDir {
		err = unix.Fstatat(t.dirfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil:
			t.exists = true
			isDir = st.Mode&unix.S_IFMT == unix.S_IFDIR
		case !errors.Is(err, unix.ENOENT):
			return fail(&pathError{op: "stat", path: path, err: err})
		}
	}
	if isDir {
		if src == nil || !validLeaf(baseName(*src)) {
			return fail(conflict("conflicting file path: cannot overwrite directory"))
		}
		if leaf != "" {
			how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
				Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
			sub, err := unix.Openat2(t.dirfd, leaf, &how)
			if errors.Is(err, unix.ENOSYS) {
				sub, err = unix.Openat(t.dirfd, leaf, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
			if err != nil {
				return fail(&pathError{op: "open", path: path, err: err})
			}
			unix.Close(t.dirfd)
			t.dirfd = sub
		}
		t.leaf, t.exists = baseName(*src), false
		err = unix.Fstatat(t.dirfd, t.leaf, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil:
			t.exists = true
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				return fail(conflict("conflicting file path: cannot overwrite directory"))
			}
		case !errors.Is(err, unix.ENOENT):
			return fail(&pathError{op: "stat", path: path, err: err})
		}
	}
	if !validLeaf(t.leaf) {
		return fail(conflict("invalid request parameters: path: not a file name"))
	}
	if t.exists {
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fail(conflict("conflicting file path: cannot overwrite irregular file"))
		}
		if s.limits() {
			if !s.p.opts.Limits.FileTransfer.AllowOverwrite {
				return fail(deny("forbidden to overwrite the file"))
			}
			if r := s.ownerCheck(&st); r != "" {
				return fail(deny(r))
			}
		}
	}
	return t, nil
}

func baseName(p string) string {
	p = strings.TrimRight(p, "/")
	return p[strings.LastIndexByte(p, '/')+1:]
}

func tempName(leaf string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "." + leaf
	if len(name) > 200 {
		name = name[:200]
	}
	return name + ".tether-" + hex.EncodeToString(b[:])
}

// upload serves put_file: the data goes to a temporary file next to the
// target, which is synced, given its mode and owner and renamed over the
// target only when the whole file has arrived; the directory is synced
// after. Any other end removes the temporary file and leaves the old
// target as it was.
func (s *session) upload(m *wire.ProtoMsg) {
	var req wire.UploadBody
	if err := wire.DecodeBody(m.Body, &req); err != nil {
		s.replyError(m, "malformed request parameters: "+err.Error())
		return
	}
	if req.Path == nil || *req.Path == "" {
		s.replyError(m, "invalid request parameters: path: cannot be blank")
		return
	}
	path := *req.Path
	l := s.p.opts.Limits.FileTransfer
	if s.limits() && l.MaxFileSize > 0 && req.Size != nil && *req.Size > 0 && uint64(*req.Size) > l.MaxFileSize {
		s.replyError(m, msgAccessDenied+"the file size is over the limit")
		return
	}
	if _, err := s.p.res.rel(path); err != nil {
		s.replyError(m, denial("invalid request parameters: ", err))
		return
	}
	var t *target
	err := s.p.opts.Identity.do(func() (err error) {
		t, err = s.locate(path, req.SrcPath)
		return err
	})
	var c conflict
	var d deny
	switch {
	case errors.As(err, &c):
		s.replyError(m, c.Error())
		return
	case errors.As(err, &d):
		s.replyError(m, msgAccessDenied+d.Error())
		return
	case err != nil:
		s.replyError(m, denial("failed to open the target directory: ", err))
		return
	}
	defer unix.Close(t.dirfd)

	mode := uint32(0o644)
	if req.Mode != nil {
		mode = *req.Mode
	}
	special := mode&(posixSetuid|posixSetgid|goSetuid|goSetgid) != 0
	if s.limits() && !l.AllowSuid && special {
		s.replyError(m, msgAccessDenied+"the set uid mode is forbidden")
		return
	}
	perm := mode & 0o777
	if s.limits() && l.Umask != "" {
		perm &^= s.p.umask
	}
	if s.limits() && l.AllowSuid {
		if mode&(posixSetuid|goSetuid) != 0 {
			perm |= unix.S_ISUID
		}
		if mode&(posixSetgid|goSetgid) != 0 {
			perm |= unix.S_ISGID
		}
	}
	uid, gid, err := s.owner(&req)
	if err != nil {
		s.replyError(m, err.Error())
		return
	}
	if s.p.rx != nil && s.p.rx.Tokens() < 1 {
		s.replyError(m, msgAccessDenied+"received bytes limit exhausted")
		return
	}

	var f *os.File
	var tmp string
	err = s.p.opts.Identity.do(func() error {
		for i := 0; i < 10; i++ {
			tmp = tempName(t.leaf)
			fd, err := unix.Openat(t.dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			if errors.Is(err, unix.EEXIST) {
				continue
			}
			if err != nil {
				return &pathError{op: "create temporary file in", path: path, err: err}
			}
			f = os.NewFile(uintptr(fd), tmp)
			return nil
		}
		return errors.New("create temporary file: too many attempts")
	})
	if err != nil {
		s.replyError(m, "failed to create the file: "+err.Error())
		return
	}
	committed := false
	// discard drops the temporary file before any error reply goes out,
	// so a client that sees the error never finds the file still there.
	discard := func() {
		if f == nil {
			return
		}
		f.Close()
		f = nil
		if !committed {
			_ = s.p.opts.Identity.do(func() error { return unix.Unlinkat(t.dirfd, tmp, 0) })
		}
	}
	defer discard()
	fail := func(about *wire.ProtoMsg, text string) {
		discard()
		s.replyError(about, text)
	}
	if err := s.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FileAck, SessionID: s.sid,
		Properties: map[string]interface{}{wire.PropOffset: int64(0)}}}); err != nil {
		s.log.Info("file transfer: upload aborted", "path", path, "error", err)
		return
	}

	u := &upState{s: s, f: f, path: path}
	for {
		c, timedOut := s.next(s.p.opts.AckTimeout)
		switch {
		case timedOut:
			s.log.Warn("file transfer: no chunk for the ack timeout; upload aborted", "path", path, "written", u.written)
			fail(m, "file transfer timed out waiting for file chunk")
			return
		case c == nil:
			s.log.Info("file transfer: session closed during upload; nothing kept", "path", path, "written", u.written)
			return
		case s.overflow.Load():
			fail(m, "file transfer aborted: too many messages from the peer")
			return
		case c.Header.MsgType == wire.FileChunk:
		case c.Header.MsgType == wire.FileError:
			s.peerAborted("peer aborted the upload; nothing kept", path, c)
			return
		case s.during(c):
			continue
		default:
			fail(c, fmt.Sprintf("received unexpected message type '%s' during file upload", c.Header.MsgType))
			return
		}
		// Take the chunks already waiting (up to 10 per ack, as upstream).
		last := c
		for i := 0; ; i++ {
			if text := u.put(last); text != "" {
				fail(last, text)
				return
			}
			if u.eof || i == wire.FileAckEvery-1 {
				break
			}
			n := s.ready()
			if n == nil {
				break
			}
			if n.Header.MsgType != wire.FileChunk {
				s.pending = append(s.pending, n)
				break
			}
			last = n
		}
		if u.eof {
			if err := s.commit(f, t, tmp, perm, uid, gid); err != nil {
				s.log.Warn("file transfer: upload failed", "path", path, "error", err)
				fail(last, err.Error())
				return
			}
			committed = true
		}
		ack := &wire.ProtoMsg{Header: last.Header}
		ack.Header.MsgType = wire.FileAck
		ack.Header.SessionID = s.sid
		ack.Header.Properties = copyProps(last.Header.Properties)
		if err := s.send(ack); err != nil {
			s.log.Info("file transfer: could not ack", "path", path, "error", err)
			return
		}
		if u.eof {
			s.log.Info("file transfer: upload complete", "path", path, "bytes", u.written)
			return
		}
	}
}

// upState is a running upload's progress.
type upState struct {
	s       *session
	f       *os.File
	path    string
	written int64
	eof     bool
}

// put writes one chunk; it returns the error text for the peer.
func (u *upState) put(c *wire.ProtoMsg) string {
	off, ok := c.Header.IntProp(wire.PropOffset)
	if !ok {
		return "invalid file chunk message: missing offset property"
	}
	if off != u.written {
		return "received unexpected chunk offset"
	}
	if len(c.Body) == 0 {
		u.eof = true
		return ""
	}
	l := u.s.p.opts.Limits.FileTransfer
	if u.s.limits() && l.MaxFileSize > 0 && uint64(u.written)+uint64(len(c.Body)) > l.MaxFileSize {
		return "failed to write file chunk: the file size is over the limit"
	}
	if u.s.p.rx != nil && !u.s.p.rx.AllowN(time.Now(), len(c.Body)) {
		return "failed to write file chunk: received bytes limit exhausted"
	}
	if _, err := u.f.Write(c.Body); err != nil {
		return "failed to write file chunk: " + err.Error()
	}
	u.written += int64(len(c.Body))
	return ""
}

// owner is the uid/gid to give the upload, -1 for "as created" (the
// user's). OwnerPut/GroupPut win; then what the request asks. Giving a
// file away is up to the kernel: only a root account may.
func (s *session) owner(req *wire.UploadBody) (int, int, error) {
	uid, gid := -1, -1
	l := s.p.opts.Limits.FileTransfer
	if s.limits() && l.OwnerPut != "" {
		u, err := user.Lookup(l.OwnerPut)
		if err != nil {
			return 0, 0, fmt.Errorf("Limits.FileTransfer.OwnerPut: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
	} else if req.UID != nil {
		uid = int(*req.UID)
	}
	if s.limits() && l.GroupPut != "" {
		g, err := user.LookupGroup(l.GroupPut)
		if err != nil {
			return 0, 0, fmt.Errorf("Limits.FileTransfer.GroupPut: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	} else if req.GID != nil {
		gid = int(*req.GID)
	}
	return uid, gid, nil
}

// commit makes the temporary file the target: data synced, mode and
// owner set (as the user: the kernel says who may give a file away or
// keep a set-id bit), renamed over the target, directory synced.
func (s *session) commit(f *os.File, t *target, tmp string, perm uint32, uid, gid int) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("failed to sync the file: %w", err)
	}
	noReplace := s.limits() && !s.p.opts.Limits.FileTransfer.AllowOverwrite
	err := s.p.opts.Identity.do(func() error {
		fd := int(f.Fd())
		if uid >= 0 || gid >= 0 {
			if err := unix.Fchown(fd, uid, gid); err != nil {
				return fmt.Errorf("failed to chown the file: %w", err)
			}
		}
		// After the chown, which clears set-id bits.
		if err := unix.Fchmod(fd, perm); err != nil {
			return fmt.Errorf("failed to chmod the file: %w", err)
		}
		flags := uint(0)
		if noReplace {
			flags = unix.RENAME_NOREPLACE
		}
		if err := unix.Renameat2(t.dirfd, tmp, t.dirfd, t.leaf, flags); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return errors.New(msgAccessDenied + "forbidden to overwrite the file")
			}
			return fmt.Errorf("failed to commit the file: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The rename is durable only once the directory is synced. An O_PATH
	// descriptor cannot be synced; reopening "." of it needs no lookup.
	dfd, err := unix.Openat(t.dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Fsync(dfd)
		unix.Close(dfd)
	}
	if err != nil {
		s.log.Warn("file transfer: could not sync the directory after the rename", "error", err)
	}
	return nil
}
