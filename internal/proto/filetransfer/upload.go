package filetransfer

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/tether-agent/tether/internal/identity"
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
	dir    string // the path dirfd was opened by
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
// name in it (docs/protocol.md §5.3 step 1, §5.4). It runs
// as the user.
func (s *session) locate(path string, src *string) (*target, error) {
	return s.locateIn(path, src, false)
}

// locateIn is locate; followed says path is already a symlink's target.
func (s *session) locateIn(path string, src *string, followed bool) (*target, error) {
	dir, leaf := path[:strings.LastIndexByte(path, '/')+1], path[strings.LastIndexByte(path, '/')+1:]
	if dir != "/" {
		dir = strings.TrimSuffix(dir, "/")
	}
	dirfd, err := s.p.res.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	t := &target{dirfd: dirfd, dir: dir, leaf: leaf}
	fail := func(err error) (*target, error) {
		unix.Close(t.dirfd)
		return nil, err
	}
	var st unix.Stat_t
	isDir := leaf == ""
	if !isDir {
		err = unix.Fstatat(t.dirfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK && !s.p.res.noSymlink && !followed {
			// A link to a file (or to a directory to upload into): the
			// upload lands where it leads, as upstream's write through
			// it would, and the link stays a link. The kernel keeps the
			// lookup beneath the root (see follow).
			real, err := s.p.res.realPath(path)
			unix.Close(t.dirfd)
			if err != nil {
				return nil, err
			}
			return s.locateIn(real, src, true)
		}
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
			t.dir = strings.TrimSuffix(dir, "/") + "/" + leaf
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
		s.replyStatus(m, statusTooLarge, msgAccessDenied+"the file size is over the limit")
		return
	}
	if _, err := s.p.res.rel(path); err != nil {
		s.replyStatus(m, statusOf(err), denial("invalid request parameters: ", err))
		return
	}
	// The rest of the upload runs on one thread switched to the account,
	// so that everything it does to the file system, its writes
	// included, is the account's: permissions, quotas and root's reserved
	// blocks hold (see thread for why one thread per upload, and why the
	// whole upload and not each step).
	th, err := s.p.opts.Identity.Start()
	if err != nil {
		s.log.Error("file transfer: cannot switch to the account", "error", err)
		s.replyError(m, "failed to open the target directory: "+err.Error())
		return
	}
	defer th.Close()
	_ = th.Do(func() error {
		s.uploadOn(th, m, &req, path)
		return nil
	})
}

// uploadOn is upload once on the account's thread (th; nil when the
// daemon cannot switch): everything here has the account's rights but
// what goes through th.asRoot.
func (s *session) uploadOn(th *identity.Thread, m *wire.ProtoMsg, req *wire.UploadBody, path string) {
	l := s.p.opts.Limits.FileTransfer
	t, err := s.locate(path, req.SrcPath)
	var c conflict
	var d deny
	switch {
	case errors.As(err, &c):
		s.replyStatus(m, statusConflict, c.Error())
		return
	case errors.As(err, &d):
		s.replyStatus(m, statusForbidden, msgAccessDenied+d.Error())
		return
	case err != nil:
		s.replyStatus(m, statusOf(err), denial("failed to open the target directory: ", err))
		return
	}
	defer unix.Close(t.dirfd)

	mode := uint32(0o644)
	if req.Mode != nil {
		mode = *req.Mode
	}
	special := mode&(posixSetuid|posixSetgid|goSetuid|goSetgid) != 0
	if s.limits() && !l.AllowSuid && special {
		s.replyStatus(m, statusForbidden, msgAccessDenied+"the set uid mode is forbidden")
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
	uid, gid, err := s.owner(req)
	if err != nil {
		s.replyError(m, err.Error())
		return
	}
	if s.p.rx != nil && s.p.rx.Tokens() < 1 {
		s.replyStatus(m, statusForbidden, msgAccessDenied+"received bytes limit exhausted")
		return
	}

	var f *os.File
	var tmp, rec string
	// The temporary file is journaled before it exists, so that a kill
	// at any point leaves a record of it (see journal).
	var dst unix.Stat_t
	if err := unix.Fstat(t.dirfd, &dst); err != nil {
		s.replyError(m, "failed to create the file: "+err.Error())
		return
	}
	for i := 0; f == nil; i++ {
		if i == 10 {
			s.replyError(m, "failed to create the file: create temporary file: too many attempts")
			return
		}
		tmp = tempName(t.leaf)
		r := record{Dir: []byte(t.dir), Dev: uint64(dst.Dev), Ino: uint64(dst.Ino), Name: []byte(tmp), UID: s.p.opts.Identity.FSUID()}
		th.AsRoot(func() { rec = s.p.journal.add(r, s.log) })
		fd, err := unix.Openat(t.dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			f = os.NewFile(uintptr(fd), tmp)
		} else {
			th.AsRoot(func() { s.p.journal.done(rec) })
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			s.replyStatus(m, statusOf(err), "failed to create the file: "+(&pathError{op: "create temporary file in", path: path, err: err}).Error())
			return
		}
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
			_ = unix.Unlinkat(t.dirfd, tmp, 0)
		}
		th.AsRoot(func() { s.p.journal.done(rec) })
	}
	defer discard()
	fail := func(about *wire.ProtoMsg, code int, text string) {
		discard()
		s.replyStatus(about, code, text)
	}
	g := s.newSendGuard()
	defer g.close()
	acks := ackFrames(s.sid)
	start := wire.Header{Proto: wire.ProtoFileTransfer, Properties: map[string]interface{}{wire.PropOffset: int64(0)}}
	if err := s.sendAck(g, acks, &start); err != nil {
		s.log.Info("file transfer: upload aborted", "path", path, "error", err)
		return
	}

	u := &upState{s: s, f: f, path: path}
	for {
		c, timedOut := s.next(s.p.opts.AckTimeout)
		switch {
		case timedOut:
			s.log.Warn("file transfer: no chunk for the ack timeout; upload aborted", "path", path, "written", u.written)
			fail(m, statusBadRequest, "file transfer timed out waiting for file chunk")
			return
		case c == nil:
			s.log.Info("file transfer: session closed during upload; nothing kept", "path", path, "written", u.written)
			return
		case s.overflow.Load():
			fail(m, statusBadRequest, "file transfer aborted: too many messages from the peer")
			return
		case c.Header.MsgType == wire.FileChunk:
		case c.Header.MsgType == wire.FileError:
			s.peerAborted("peer aborted the upload; nothing kept", path, c)
			return
		case s.during(c):
			continue
		default:
			fail(c, statusBadRequest, fmt.Sprintf("received unexpected message type '%s' during file upload", c.Header.MsgType))
			return
		}
		// Take the chunks already waiting (up to 10 per ack, as upstream).
		last := c
		for i := 0; ; i++ {
			if code, text := u.put(last); text != "" {
				fail(last, code, text)
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
			// Written, and not the one acked: the link may decode
			// the next frame into it.
			last.Recycle()
			last = n
		}
		if u.eof {
			if err := s.commit(th, f, t, tmp, perm, uid, gid); err != nil {
				s.log.Warn("file transfer: upload failed", "path", path, "error", err)
				fail(last, statusOf(err), err.Error())
				return
			}
			committed = true
			th.AsRoot(func() { s.p.journal.done(rec) })
			rec = ""
		}
		if err := s.sendAck(g, acks, &last.Header); err != nil {
			s.log.Info("file transfer: could not ack", "path", path, "error", err)
			return
		}
		if u.eof {
			s.log.Info("file transfer: upload complete", "path", path, "bytes", u.written)
			return
		}
		// Acked (the ack is encoded): done with it.
		last.Recycle()
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

// put writes one chunk; it returns the error status and text for the
// peer ("" when it went well). It runs
// on the account's thread: a write as root could take the blocks ext4
// reserves for root and ignore the account's quota (CAP_SYS_RESOURCE).
func (u *upState) put(c *wire.ProtoMsg) (int, string) {
	off, ok := c.Header.IntProp(wire.PropOffset)
	if !ok {
		return statusBadRequest, "invalid file chunk message: missing offset property"
	}
	if off != u.written {
		return statusBadRequest, "received unexpected chunk offset"
	}
	if len(c.Body) == 0 {
		u.eof = true
		return 0, ""
	}
	l := u.s.p.opts.Limits.FileTransfer
	if u.s.limits() && l.MaxFileSize > 0 && uint64(u.written)+uint64(len(c.Body)) > l.MaxFileSize {
		return statusTooLarge, "failed to write file chunk: the file size is over the limit"
	}
	if u.s.p.rx != nil && !u.s.p.rx.AllowN(time.Now(), len(c.Body)) {
		return statusForbidden, "failed to write file chunk: received bytes limit exhausted"
	}
	if _, err := u.f.Write(c.Body); err != nil {
		return statusOf(err), "failed to write file chunk: " + err.Error()
	}
	u.written += int64(len(c.Body))
	// The chunk is on disk: its body goes back to the link for the next
	// one (the header stays, for the ack).
	c.Release()
	return 0, ""
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
// keep a set-id bit), renamed over the target, directory synced. It runs
// on the account's thread, like the writes: the writeback of delayed
// allocations may happen in the fsync.
func (s *session) commit(th *identity.Thread, f *os.File, t *target, tmp string, perm uint32, uid, gid int) error {
	noReplace := s.limits() && !s.p.opts.Limits.FileTransfer.AllowOverwrite
	err := func() error {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("failed to sync the file: %w", err)
		}
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
	}()
	if err != nil {
		return err
	}
	// The rename is durable only once the directory is synced. An O_PATH
	// descriptor cannot be synced; reopening "." of it needs no lookup,
	// but read permission, which the account may lack (a drop box
	// directory): as root.
	th.AsRoot(func() {
		var dfd int
		dfd, err = unix.Openat(t.dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Fsync(dfd)
			unix.Close(dfd)
		}
	})
	if err != nil {
		s.log.Warn("file transfer: could not sync the directory after the rename", "error", err)
	}
	return nil
}
