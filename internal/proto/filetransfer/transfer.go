package filetransfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// pathOf decodes a stat/get_file body; the error is upstream's text.
func pathOf(m *wire.ProtoMsg) (string, string) {
	var b wire.FilePathBody
	if err := wire.DecodeBody(m.Body, &b); err != nil {
		return "", "malformed request parameters: " + err.Error()
	}
	if b.Path == nil || *b.Path == "" {
		return "", "invalid request parameters: path: cannot be blank"
	}
	if len(*b.Path) > maxPath {
		// No file has such a name; the error would only echo it.
		return "", fmt.Sprintf("invalid request parameters: path: longer than %d bytes", maxPath)
	}
	return *b.Path, ""
}

// denial renders an error for the peer: a limit's refusal is "access
// denied: <reason>", anything else prefix: <err>.
func denial(prefix string, err error) string {
	if isDenial(err) {
		return msgAccessDenied + err.Error()
	}
	return prefix + err.Error()
}

func (s *session) stat(m *wire.ProtoMsg) {
	path, bad := pathOf(m)
	if bad != "" {
		s.replyError(m, bad)
		return
	}
	if !s.p.opts.FDs.Acquire(fdsStat) {
		s.refused(m, msgNoFDs)
		return
	}
	defer s.p.opts.FDs.Release(fdsStat)
	var st unix.Stat_t
	err := s.p.opts.Identity.Do(func() error {
		fd, err := s.p.res.open(path, unix.O_PATH, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fstat(fd, &st)
	})
	if err != nil {
		s.replyStatus(m, statusOf(err), denial(fmt.Sprintf("failed to get file info from path '%s': ", path), err))
		return
	}
	size, uid, gid, mode := st.Size, st.Uid, st.Gid, uint32(goMode(st.Mode))
	mt := time.Unix(st.Mtim.Unix())
	b, err := wire.EncodeBody(wire.FileInfoBody{Path: &path, Size: &size, UID: &uid, GID: &gid, Mode: &mode, ModTime: &mt})
	if err != nil {
		s.replyError(m, err.Error())
		return
	}
	if err := s.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FileInfo, SessionID: s.sid}, Body: b}); err != nil {
		s.log.Info("file transfer: could not send file_info", "error", err)
	}
}

// goMode converts st_mode to Go's os.FileMode layout, which the server
// tests with IsRegular.
func goMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		fm |= os.ModeDir
	case unix.S_IFLNK:
		fm |= os.ModeSymlink
	case unix.S_IFIFO:
		fm |= os.ModeNamedPipe
	case unix.S_IFSOCK:
		fm |= os.ModeSocket
	case unix.S_IFCHR:
		fm |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		fm |= os.ModeDevice
	}
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

func (s *session) limits() bool { return s.p.opts.Limits.Enabled }

func chunk(sid string, off int64, body []byte) *wire.ProtoMsg {
	return &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FileChunk, SessionID: sid,
		Properties: map[string]interface{}{wire.PropOffset: off}}, Body: body}
}

// errSendStalled ends a download whose chunks the link did not take for
// the ack timeout.
var errSendStalled = fmt.Errorf("no chunk sent for the ack timeout: %w", context.DeadlineExceeded)

// sendErr is why a send under ctx failed: the stall rather than the
// context's "canceled".
func sendErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if c := context.Cause(ctx); c != nil && errors.Is(err, context.Canceled) {
		return c
	}
	return err
}

// framePool holds a transfer's frame buffers: a download's chunk or an
// upload's ack is encoded into one and the buffer comes back once the
// link has written the frame, so a transfer allocates its window's worth
// of buffers once instead of a frame per chunk. Buffers the link never
// gives back (the session ended with frames queued) are left to the
// garbage collector.
type framePool struct {
	size int
	free chan *frameBuf
}

type frameBuf struct {
	b       []byte
	release func() // made once per buffer: no closure per frame
}

// newFramePool keeps buffers of size bytes: the window's chunks, the EOF
// chunk, and slack for frames the link has taken but not yet reported
// written.
func newFramePool(size int) *framePool {
	return &framePool{size: size, free: make(chan *frameBuf, wire.FileWindowChunks+4)}
}

// chunkFrames is a download's pool; ackFrames an upload's, whose acks
// echo the chunk's props (an offset and the server's user_id).
func chunkFrames(sid string) *framePool {
	return newFramePool(wire.FileChunkOverhead(len(sid)) + wire.FileChunkSize)
}

func ackFrames(sid string) *framePool {
	return newFramePool(wire.FileChunkOverhead(len(sid)) + 256)
}

func (p *framePool) get() *frameBuf {
	select {
	case fb := <-p.free:
		return fb
	default:
	}
	fb := &frameBuf{b: make([]byte, p.size)}
	fb.release = func() {
		select {
		case p.free <- fb:
		default: // more buffers out than the pool keeps: let this one go
		}
	}
	return fb
}

// sendGuard bounds each send of a transfer by the ack timeout, as a
// context per send would, but on one context and one timer re-armed per
// send: a context and a timer per chunk or ack were a good part of a
// transfer's garbage. Once a send stalls, the context stays ended and
// the transfer with it.
type sendGuard struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  *time.Timer
	wait   time.Duration
}

func (s *session) newSendGuard() *sendGuard {
	ctx, cancel := context.WithCancelCause(s.ctx)
	g := &sendGuard{ctx: ctx, cancel: cancel, wait: s.p.opts.AckTimeout}
	g.stall = time.AfterFunc(g.wait, func() { cancel(errSendStalled) })
	g.stall.Stop()
	return g
}

// arm starts the wait of one send and returns its context; done ends it.
func (g *sendGuard) arm() context.Context {
	g.stall.Reset(g.wait)
	return g.ctx
}

func (g *sendGuard) done(err error) error {
	g.stall.Stop()
	return sendErr(g.ctx, err)
}

func (g *sendGuard) close() {
	g.stall.Stop()
	g.cancel(nil)
}

// sendChunk sends the file_chunk at off carrying body: encoded into a
// pooled buffer when the Sender takes encoded frames, as a message
// otherwise.
func (s *session) sendChunk(g *sendGuard, frames *framePool, off int64, body []byte) error {
	fs, ok := s.out.(proto.FrameSender)
	if !ok {
		return g.done(s.out.Send(g.arm(), chunk(s.sid, off, body)))
	}
	fb := frames.get()
	b := wire.AppendFileChunk(fb.b[:0], s.sid, off, body)
	return g.done(fs.SendFrame(g.arm(), b, cap(b), fb.release))
}

// sendAck acks the upload's chunks up to the one with header h, echoing
// its props: encoded into a pooled buffer when the Sender takes encoded
// frames and the props allow (they were decoded without a map, or are
// one integer), as a message otherwise.
func (s *session) sendAck(g *sendGuard, frames *framePool, h *wire.Header) error {
	fs, ok := s.out.(proto.FrameSender)
	if !ok {
		return s.sendAckMsg(g, h)
	}
	ack := wire.ProtoMsg{Header: *h}
	ack.Header.MsgType = wire.FileAck
	ack.Header.SessionID = s.sid
	fb := frames.get()
	b, ok := wire.AppendMsg(fb.b[:0], &ack)
	if !ok {
		fb.release()
		return s.sendAckMsg(g, h)
	}
	return g.done(fs.SendFrame(g.arm(), b, cap(b), fb.release))
}

func (s *session) sendAckMsg(g *sendGuard, h *wire.Header) error {
	ack := &wire.ProtoMsg{Header: h.Clone()}
	ack.Header.MsgType = wire.FileAck
	ack.Header.SessionID = s.sid
	return g.done(s.out.Send(g.arm(), ack))
}

// download serves get_file: chunks of at most 4096 bytes, at most 20
// ahead of the last ack, then the EOF chunk, then it waits for the ack
// of everything.
func (s *session) download(m *wire.ProtoMsg) {
	path, bad := pathOf(m)
	if bad != "" {
		s.replyError(m, bad)
		return
	}
	l := s.p.opts.Limits.FileTransfer
	var f *os.File
	var st unix.Stat_t
	err := s.p.opts.Identity.Do(func() error {
		// O_NONBLOCK: opening a FIFO must not wait for a writer.
		fd, err := s.p.res.open(path, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), path)
		return nil
	})
	if err != nil {
		s.replyStatus(m, statusOf(err), denial("failed to open the file: ", err))
		return
	}
	defer f.Close()
	// A device or FIFO never ends and a directory cannot be read: only
	// regular files are served, whatever RegularFilesOnly says (the
	// server refuses anything else after its stat anyway).
	var reason string
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		reason = "only regular files are allowed"
	case s.limits() && len(l.OwnerGet) > 0 && !slices.Contains(l.OwnerGet, userName(st.Uid)):
		reason = "the file owner does not match"
	case s.limits() && len(l.GroupGet) > 0 && !slices.Contains(l.GroupGet, groupName(st.Gid)):
		reason = "the file group does not match"
	case s.limits() && l.MaxFileSize > 0 && uint64(st.Size) > l.MaxFileSize:
		reason = "the file size is over the limit"
	case s.p.tx != nil && s.p.tx.Tokens() < float64(min(max(st.Size, 1), wire.FileChunkSize)):
		// Not even the first chunk could go out.
		reason = "transmitted bytes limit exhausted"
	}
	if reason != "" {
		s.replyStatus(m, statusForbidden, msgAccessDenied+reason)
		return
	}
	var r io.Reader = f
	if s.limits() && l.MaxFileSize > 0 {
		// A file that grows while it is sent is cut at the limit.
		r = io.LimitReader(f, int64(l.MaxFileSize))
	}
	buf := make([]byte, wire.FileChunkSize)
	frames := chunkFrames(s.sid)
	var sent, acked int64
	eof := false
	const window = wire.FileChunkSize * wire.FileWindowChunks
	g := s.newSendGuard()
	defer g.close()
	send := func(off int64, body []byte) error { return s.sendChunk(g, frames, off, body) }
	for {
		for !eof && sent < acked+window {
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				if s.p.tx != nil && !s.p.tx.AllowN(time.Now(), n) {
					s.replyStatus(m, statusForbidden, "failed to send file chunk: transmitted bytes limit exhausted")
					return
				}
				if err := send(sent, buf[:n]); err != nil {
					s.log.Info("file transfer: download aborted", "path", path, "error", err)
					return
				}
				sent += int64(n)
				s.p.paced(n)
			}
			switch {
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				if err := send(sent, nil); err != nil {
					s.log.Info("file transfer: download aborted", "path", path, "error", err)
					return
				}
				eof = true
			case err != nil:
				s.replyError(m, "failed to read the file: "+err.Error())
				return
			}
		}
		if eof && acked >= sent {
			s.finished = sent
			s.log.Info("file transfer: download complete", "path", path, "bytes", sent)
			return
		}
		a, timedOut := s.next(s.p.opts.AckTimeout)
		switch {
		case timedOut:
			s.log.Warn("file transfer: no ack for the ack timeout; download aborted", "path", path, "sent", sent, "acked", acked)
			s.replyError(m, "file transfer timed out waiting for ack")
			return
		case a == nil:
			s.log.Info("file transfer: session closed during download", "path", path, "sent", sent)
			return
		case s.overflow.Load():
			s.replyError(m, "file transfer aborted: too many messages from the peer")
			return
		case a.Header.MsgType == wire.FileAck:
			if !a.Header.HasProp(wire.PropOffset) {
				s.replyError(a, "ack message: offset property cannot be blank")
				return
			}
			// Any integer width is taken (upstream insists on int64).
			off, ok := a.Header.IntProp(wire.PropOffset)
			if !ok {
				s.replyError(a, "invalid offset data type: require int64")
				return
			}
			acked = max(acked, off)
			// Read and done with: the link may decode the next ack into it.
			a.Recycle()
		case a.Header.MsgType == wire.FileError:
			s.peerAborted("peer aborted the download", path, a)
			return
		case s.during(a):
		default:
			s.replyError(a, fmt.Sprintf("received unexpected message type '%s'; expected 'ack'", a.Header.MsgType))
			return
		}
	}
}

// ownerOK checks OwnerPut/GroupPut against an existing file.
func (s *session) ownerCheck(st *unix.Stat_t) string {
	l := s.p.opts.Limits.FileTransfer
	switch {
	case l.OwnerPut != "" && userName(st.Uid) != l.OwnerPut:
		return "the file owner does not match"
	case l.GroupPut != "" && groupName(st.Gid) != l.GroupPut:
		return "the file group does not match"
	}
	return ""
}
