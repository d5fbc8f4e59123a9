package mockserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/wire"
)

// File-transfer REST calls (docs/protocol.md §8.2): the server itself is the
// device's peer, as deviceconnect's management_filetransfer does.
const (
	// FileTransferTimeout is the wait for each awaited device message.
	FileTransferTimeout = 60 * time.Second
	ftWindow            = wire.FileChunkSize * wire.FileWindowChunks
	ftPeerBuffer        = 256
)

// Headers of a download response.
const (
	HeaderFilePath = "X-MEN-File-Path"
	HeaderFileUID  = "X-MEN-File-UID"
	HeaderFileGID  = "X-MEN-File-GID"
	HeaderFileMode = "X-MEN-File-Mode"
	HeaderFileSize = "X-MEN-File-Size"
)

// ftError is a failure with the HTTP status the real server gives it.
type ftError struct {
	status int
	msg    string
}

func (e *ftError) Error() string { return e.msg }

var (
	errFTTimeout        = &ftError{http.StatusRequestTimeout, "file transfer timed out"}
	errFTNotImplemented = &ftError{http.StatusBadGateway, "file transfer not implemented on device"}
	errFTDisabled       = &ftError{http.StatusBadGateway, "file transfer disabled on device"}
)

// ftPeer is one REST call's session with the device.
type ftPeer struct {
	dev    *Device
	sid    string
	userID string
	in     chan *wire.ProtoMsg
	lost   chan struct{} // closed when a message could not be queued
}

// deliver runs on the device's read loop and never blocks it.
func (p *ftPeer) deliver(m *wire.ProtoMsg) {
	select {
	case p.in <- m:
	default:
		select {
		case <-p.lost:
		default:
			close(p.lost)
		}
	}
}

func (d *Device) addPeer(p *ftPeer) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	if d.peers == nil {
		d.peers = make(map[string]*ftPeer)
	}
	d.peers[p.sid] = p
	return true
}

func (d *Device) removePeer(p *ftPeer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.peers[p.sid] == p {
		delete(d.peers, p.sid)
	}
}

func (p *ftPeer) send(typ string, props map[string]interface{}, body []byte) error {
	proto := wire.ProtoFileTransfer
	switch typ {
	case wire.TypeOpen, wire.TypeClose, wire.TypePong:
		proto = wire.ProtoControl
	}
	h := wire.Header{Proto: proto, MsgType: typ, SessionID: p.sid}
	if proto == wire.ProtoFileTransfer {
		h.Properties = map[string]interface{}{wire.PropUserID: p.userID}
		for k, v := range props {
			h.Properties[k] = v
		}
	}
	return p.dev.Send(&wire.ProtoMsg{Header: h, Body: body})
}

// recv waits for the next device message of this session, answering
// control pings on the way, for at most FileTransferTimeout (the real
// server's wait per message).
func (p *ftPeer) recv(ctx context.Context) (*wire.ProtoMsg, error) {
	t := time.NewTimer(FileTransferTimeout)
	defer t.Stop()
	return p.recvUntil(ctx, t.C)
}

// recvUntil is recv with its own timeout channel (nil: none).
func (p *ftPeer) recvUntil(ctx context.Context, timeout <-chan time.Time) (*wire.ProtoMsg, error) {
	for {
		select {
		case m := <-p.in:
			if m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypePing {
				if err := p.send(wire.TypePong, nil, nil); err != nil {
					return nil, err
				}
				continue
			}
			return m, nil
		case <-p.lost:
			return nil, errors.New("device messages lost: the server's peer fell behind")
		case <-p.dev.Done():
			return nil, errors.New("device disconnected")
		case <-timeout:
			return nil, errFTTimeout
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// deviceError reads a device "error" body and the HTTP status the real
// server answers with: an integer code > 0 in the body becomes the status
// (PROTOCOL.md 2.9.1), else def. A code that is no HTTP error status
// (outside 400..599) also gives def: the mock does not answer a failure
// with a success or an informational status.
func deviceError(m *wire.ProtoMsg, def int) (string, int) {
	var e struct {
		Error string      `msgpack:"err"`
		Code  interface{} `msgpack:"code"`
	}
	_ = wire.DecodeBody(m.Body, &e)
	var code int64
	switch v := reflect.ValueOf(e.Code); v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		code = v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if v.Uint() < 1000 {
			code = int64(v.Uint())
		}
	}
	if code < 400 || code > 599 {
		return e.Error, def
	}
	return e.Error, int(code)
}

// openPeer finds the device, registers a session and does the control
// handshake; the caller must call closePeer.
func (s *Server) openPeer(ctx context.Context, deviceID, userID string) (*ftPeer, error) {
	dev, known := s.liveDevice(ctx, deviceID)
	switch {
	case !known:
		return nil, &ftError{http.StatusNotFound, "device not found"}
	case dev == nil:
		return nil, &ftError{http.StatusConflict, "device disconnected"}
	}
	p := &ftPeer{dev: dev, sid: randomUUID(), userID: userID, in: make(chan *wire.ProtoMsg, ftPeerBuffer), lost: make(chan struct{})}
	if !dev.addPeer(p) {
		return nil, &ftError{http.StatusConflict, "device disconnected"}
	}
	body, err := wire.EncodeBody(wire.OpenBody{Versions: []int{wire.ProtocolVersion}})
	if err == nil {
		err = p.send(wire.TypeOpen, nil, body)
	}
	if err != nil {
		dev.removePeer(p)
		return nil, &ftError{http.StatusInternalServerError, "failed to publish the message"}
	}
	m, err := p.recv(ctx)
	if err == nil {
		err = handshake(p, m)
	}
	if err != nil {
		s.closePeer(p)
		return nil, err
	}
	return p, nil
}

func handshake(p *ftPeer, m *wire.ProtoMsg) error {
	if m.Header.MsgType == wire.TypeError {
		text, code := deviceError(m, http.StatusInternalServerError)
		return &ftError{code, "handshake error from client: handshake error from client: " + text}
	}
	if m.Header.MsgType != wire.TypeAccept {
		return errFTNotImplemented
	}
	var acc wire.AcceptBody
	if err := wire.DecodeBody(m.Body, &acc); err != nil {
		return &ftError{http.StatusInternalServerError, err.Error()}
	}
	if !slices.Contains(acc.Protocols, wire.ProtoFileTransfer) {
		return errFTDisabled
	}
	return nil
}

// closePeer tells the device the session is over, as the real server's
// deferred control close does.
func (s *Server) closePeer(p *ftPeer) {
	_ = p.send(wire.TypeClose, nil, nil)
	p.dev.removePeer(p)
}

// writeFTError renders like rest.RenderError: {"error","request_id"}.
func writeFTError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var fe *ftError
	switch {
	case errors.As(err, &fe):
		status = fe.status
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusRequestTimeout
	}
	id := randomUUID()
	w.Header().Set("X-MEN-RequestID", id)
	writeJSON(w, status, map[string]string{"error": err.Error(), "request_id": id})
}

func validPath(p string) error {
	switch {
	case p == "":
		return &ftError{http.StatusBadRequest, "path: cannot be blank."}
	case !strings.HasPrefix(p, "/"):
		return &ftError{http.StatusBadRequest, "path: must be absolute."}
	}
	return nil
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		allowMethod(w, r, http.MethodGet)
		return
	}
	c, ok := s.authenticateUser(w, r)
	if !ok {
		return
	}
	fpath := r.URL.Query().Get("path")
	if err := validPath(fpath); err != nil {
		writeFTError(w, err)
		return
	}
	p, err := s.openPeer(r.Context(), r.PathValue("id"), c.Subject)
	if err != nil {
		writeFTError(w, err)
		return
	}
	defer s.closePeer(p)
	info, err := p.stat(r.Context(), fpath)
	if err != nil {
		writeFTError(w, fmt.Errorf("failed to retrieve file info: %w", err))
		return
	}
	if info.Mode == nil || !os.FileMode(*info.Mode).IsRegular() {
		writeFTError(w, &ftError{http.StatusBadRequest, "path is not a regular file"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	if info.Path != nil {
		h.Set("Content-Disposition", `attachment; filename="`+path.Base(*info.Path)+`"`)
		h.Set(HeaderFilePath, *info.Path)
	}
	if info.UID != nil {
		h.Set(HeaderFileUID, strconv.FormatUint(uint64(*info.UID), 10))
	}
	if info.GID != nil {
		h.Set(HeaderFileGID, strconv.FormatUint(uint64(*info.GID), 10))
	}
	h.Set(HeaderFileMode, strconv.FormatUint(uint64(*info.Mode), 8))
	if info.Size != nil {
		h.Set(HeaderFileSize, strconv.FormatInt(*info.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if err := p.download(r.Context(), w, fpath); err != nil {
		// The status line is gone; like the real server, only log it.
		s.log.Info("error downloading file from device", "path", fpath, "err", err)
	}
}

func (p *ftPeer) stat(ctx context.Context, fpath string) (*wire.FileInfoBody, error) {
	body, _ := wire.EncodeBody(wire.FilePathBody{Path: &fpath})
	if err := p.send(wire.FileStat, nil, body); err != nil {
		return nil, err
	}
	m, err := p.recv(ctx)
	if err != nil {
		return nil, err
	}
	if m.Header.MsgType == wire.FileError {
		text, code := deviceError(m, http.StatusBadRequest)
		return nil, &ftError{code, "error received from device: " + text}
	}
	if m.Header.Proto != wire.ProtoFileTransfer || m.Header.MsgType != wire.FileInfo {
		return nil, fmt.Errorf("unexpected response from device %q", m.Header.MsgType)
	}
	var info wire.FileInfoBody
	if err := wire.DecodeBody(m.Body, &info); err != nil {
		return nil, fmt.Errorf("malformed message body from device: %w", err)
	}
	return &info, nil
}

// strictOffset reads an offset as the real server does: a Go type
// assertion to int64, anything else is 0.
func strictOffset(m *wire.ProtoMsg) int64 {
	v, _ := m.Header.Properties[wire.PropOffset].(int64)
	return v
}

func (p *ftPeer) download(ctx context.Context, dst io.Writer, fpath string) error {
	body, _ := wire.EncodeBody(wire.FilePathBody{Path: &fpath})
	if err := p.send(wire.FileGet, nil, body); err != nil {
		return err
	}
	bw := bufio.NewWriter(dst)
	var latest int64
	chunks := 0
	for {
		m, err := p.recv(ctx)
		if err != nil {
			return err
		}
		switch m.Header.MsgType {
		case wire.FileError:
			text, code := deviceError(m, http.StatusInternalServerError)
			return &ftError{code, text}
		case wire.FileChunk:
			if len(m.Body) == 0 {
				if err := p.send(wire.FileAck, map[string]interface{}{wire.PropOffset: latest}, nil); err != nil {
					return err
				}
				return bw.Flush()
			}
			if strictOffset(m) != latest {
				return &ftError{http.StatusInternalServerError, "file transfer failed: wrong offset received"}
			}
			latest += int64(len(m.Body))
			if _, err := bw.Write(m.Body); err != nil {
				return err
			}
			if chunks++; chunks >= wire.FileAckEvery {
				if err := p.send(wire.FileAck, map[string]interface{}{wire.PropOffset: latest}, nil); err != nil {
					return err
				}
				chunks = 0
			}
		}
	}
}

// uploadRequest is the parsed multipart form; the file part is read
// last and streamed, as the real server does (fields after it are not
// seen).
type uploadRequest struct {
	path, srcPath *string
	uid, gid      *uint32
	mode          *uint32
	file          io.Reader
}

func parseUpload(r *http.Request) (*uploadRequest, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, &ftError{http.StatusBadRequest, err.Error()}
	}
	req := &uploadRequest{}
	for req.file == nil {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &ftError{http.StatusBadRequest, err.Error()}
		}
		name := part.FormName()
		if name == "file" {
			fn := part.FileName()
			req.srcPath, req.file = &fn, part
			break
		}
		b, _ := io.ReadAll(io.LimitReader(part, wire.FileChunkSize))
		v := string(b)
		bad := func(err error) error { return &ftError{http.StatusBadRequest, err.Error()} }
		switch name {
		case "path":
			req.path = &v
		case "uid", "gid":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, bad(err)
			}
			u := uint32(n)
			if name == "uid" {
				req.uid = &u
			} else {
				req.gid = &u
			}
		case "mode":
			n, err := strconv.ParseUint(v, 8, 32)
			if err != nil {
				return nil, bad(err)
			}
			m := uint32(n)
			req.mode = &m
		}
	}
	if req.path == nil {
		return nil, &ftError{http.StatusBadRequest, "path: cannot be blank."}
	}
	if err := validPath(*req.path); err != nil {
		return nil, err
	}
	if req.file == nil {
		return nil, &ftError{http.StatusBadRequest, "file: upload file is required."}
	}
	return req, nil
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPut) {
		return
	}
	c, ok := s.authenticateUser(w, r)
	if !ok {
		return
	}
	req, err := parseUpload(r)
	if err != nil {
		writeFTError(w, err)
		return
	}
	p, err := s.openPeer(r.Context(), r.PathValue("id"), c.Subject)
	if err != nil {
		writeFTError(w, err)
		return
	}
	defer s.closePeer(p)
	if err := p.upload(r.Context(), req); err != nil {
		s.log.Info("upload failed", "path", *req.path, "err", err)
		writeFTError(w, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (p *ftPeer) upload(ctx context.Context, req *uploadRequest) error {
	body, _ := wire.EncodeBody(wire.UploadBody{SrcPath: req.srcPath, Path: req.path, UID: req.uid, GID: req.gid, Mode: req.mode})
	if err := p.send(wire.FilePut, nil, body); err != nil {
		return err
	}
	m, err := p.recv(ctx)
	if err != nil {
		return err
	}
	if m.Header.MsgType == wire.FileError {
		text, code := deviceError(m, http.StatusBadRequest)
		return &ftError{code, text}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	acks := make(chan int64, 1)
	errc := make(chan error, 1)
	go p.uploadInbound(ctx, acks, errc)

	var offset, acked int64
	buf := make([]byte, wire.FileChunkSize)
	timer := time.NewTimer(FileTransferTimeout)
	defer timer.Stop()
	wait := func() error {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(FileTransferTimeout)
		select {
		case err := <-errc:
			return err
		case acked = <-acks:
			return nil
		case <-timer.C:
			return errFTTimeout
		}
	}
	for {
		n, rerr := req.file.Read(buf)
		if n > 0 {
			if err := p.send(wire.FileChunk, map[string]interface{}{wire.PropOffset: offset}, buf[:n]); err != nil {
				return err
			}
			offset += int64(n)
		}
		if rerr == io.EOF {
			if err := p.send(wire.FileChunk, map[string]interface{}{wire.PropOffset: offset}, nil); err != nil {
				return err
			}
			break
		}
		if rerr != nil {
			return &ftError{http.StatusBadRequest, rerr.Error()}
		}
		if offset > acked+ftWindow {
			if err := wait(); err != nil {
				return err
			}
		} else {
			select {
			case err := <-errc:
				return err
			default:
			}
		}
	}
	for offset > acked {
		if err := wait(); err != nil {
			return err
		}
	}
	return nil
}

// uploadInbound passes the device's acks (the latest only) and its error.
func (p *ftPeer) uploadInbound(ctx context.Context, acks chan int64, errc chan<- error) {
	var latest int64
	for {
		m, err := p.recvNoTimeout(ctx)
		if err != nil {
			errc <- err
			return
		}
		switch m.Header.MsgType {
		case wire.FileError:
			text, code := deviceError(m, http.StatusBadRequest)
			errc <- &ftError{code, text}
			return
		case wire.FileAck:
			if off := strictOffset(m); off > latest {
				latest = off
				select {
				case acks <- latest:
				case <-acks:
					acks <- latest
				}
			}
		}
	}
}

// recvNoTimeout is recv without the per-message timer: the writer side
// keeps the upload's clock.
func (p *ftPeer) recvNoTimeout(ctx context.Context) (*wire.ProtoMsg, error) {
	return p.recvUntil(ctx, nil)
}
