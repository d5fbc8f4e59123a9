package filetransfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/wire"
)

// sender collects what a session sends; a full channel pushes back like
// the real queue.
type sender struct{ ch chan *wire.ProtoMsg }

func (s *sender) Send(ctx context.Context, m *wire.ProtoMsg) error {
	// Round-trip through the encoding, as the link would.
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	d, err := wire.Unmarshal(b)
	if err != nil {
		return err
	}
	select {
	case s.ch <- d:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SendFrame takes a frame the session encoded itself (a download's
// chunks), decodes it as the server would, and gives the buffer back as
// the link does once it has written it.
func (s *sender) SendFrame(ctx context.Context, b []byte, held int, release func()) error {
	d, err := wire.Unmarshal(b)
	if err != nil {
		return err
	}
	if held < len(b) {
		return fmt.Errorf("frame of %d bytes holds %d", len(b), held)
	}
	clear(b) // the buffer is the session's again: nothing may still read it
	release()
	select {
	case s.ch <- d:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type peer struct {
	t   *testing.T
	p   *Protocol
	s   *session
	out *sender
}

func newPeer(t *testing.T, o Options) *peer {
	t.Helper()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	out := &sender{ch: make(chan *wire.ProtoMsg, 64)}
	s := p.Open("sid-1", out).(*session)
	t.Cleanup(func() { s.Close(); p.Wait() })
	return &peer{t: t, p: p, s: s, out: out}
}

func (pr *peer) send(typ string, props map[string]interface{}, body []byte) {
	pr.s.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: typ, SessionID: "sid-1", Properties: props}, Body: body})
}

func enc(t *testing.T, v interface{}) []byte {
	t.Helper()
	b, err := wire.EncodeBody(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (pr *peer) recv() *wire.ProtoMsg {
	pr.t.Helper()
	select {
	case m := <-pr.out.ch:
		return m
	case <-time.After(10 * time.Second):
		pr.t.Fatal("no message from the device")
		return nil
	}
}

// errText waits for an error and returns its text, checking its shape.
func (pr *peer) errText(reqTyp string) string {
	pr.t.Helper()
	m := pr.recv()
	if m.Header.MsgType != wire.FileError || m.Header.Proto != wire.ProtoFileTransfer {
		pr.t.Fatalf("got %s %q, want an error", m.Header.MsgType, m.Body)
	}
	var e wire.FileErrorBody
	if err := wire.DecodeBody(m.Body, &e); err != nil {
		pr.t.Fatal(err)
	}
	if e.MessageType != reqTyp {
		pr.t.Errorf("error msgtype %q, want %q", e.MessageType, reqTyp)
	}
	if m.Header.StringProp(wire.PropUserID) != "u1" {
		pr.t.Errorf("error props %v: the request's props are not copied back", m.Header.Properties)
	}
	return e.Error
}

var user1 = map[string]interface{}{wire.PropUserID: "u1"}

func sp(s string) *string { return &s }

func props(off int64) map[string]interface{} {
	return map[string]interface{}{wire.PropUserID: "u1", wire.PropOffset: off}
}

// get downloads path as the server does (ack every 10 chunks and at EOF)
// and returns the data, or the error text.
func (pr *peer) get(path string) ([]byte, string) {
	pr.t.Helper()
	pr.send(wire.FileGet, user1, enc(pr.t, wire.FilePathBody{Path: sp(path)}))
	var data []byte
	n := 0
	for {
		m := pr.recv()
		switch m.Header.MsgType {
		case wire.FileError:
			var e wire.FileErrorBody
			_ = wire.DecodeBody(m.Body, &e)
			return nil, e.Error
		case wire.FileChunk:
			off, ok := m.Header.Properties[wire.PropOffset].(int64)
			if !ok || off != int64(len(data)) {
				pr.t.Fatalf("chunk offset %#v, want int64 %d", m.Header.Properties[wire.PropOffset], len(data))
			}
			if len(m.Body) > wire.FileChunkSize {
				pr.t.Fatalf("chunk of %d bytes", len(m.Body))
			}
			if len(m.Body) == 0 {
				pr.send(wire.FileAck, props(int64(len(data))), nil)
				return data, ""
			}
			data = append(data, m.Body...)
			if n++; n == wire.FileAckEvery {
				pr.send(wire.FileAck, props(int64(len(data))), nil)
				n = 0
			}
		default:
			pr.t.Fatalf("unexpected %s", m.Header.MsgType)
		}
	}
}

// put uploads data; "" means success.
func (pr *peer) put(req wire.UploadBody, data []byte) string {
	pr.t.Helper()
	pr.send(wire.FilePut, user1, enc(pr.t, req))
	m := pr.recv()
	if m.Header.MsgType == wire.FileError {
		var e wire.FileErrorBody
		_ = wire.DecodeBody(m.Body, &e)
		return e.Error
	}
	if off, ok := m.Header.Properties[wire.PropOffset].(int64); m.Header.MsgType != wire.FileAck || !ok || off != 0 {
		pr.t.Fatalf("put_file answered %s %v, want ack offset int64 0", m.Header.MsgType, m.Header.Properties)
	}
	var off int64
	for len(data) > 0 {
		n := min(len(data), wire.FileChunkSize)
		pr.send(wire.FileChunk, props(off), data[:n])
		off += int64(n)
		data = data[n:]
		if e := pr.drainAcks(false); e != "" {
			return e
		}
	}
	pr.send(wire.FileChunk, props(off), nil)
	for {
		m := pr.recv()
		switch m.Header.MsgType {
		case wire.FileError:
			var e wire.FileErrorBody
			_ = wire.DecodeBody(m.Body, &e)
			return e.Error
		case wire.FileAck:
			if o, _ := m.Header.IntProp(wire.PropOffset); o == off {
				return ""
			}
		}
	}
}

// drainAcks takes the acks that have arrived; an error is returned.
func (pr *peer) drainAcks(wait bool) string {
	for {
		select {
		case m := <-pr.out.ch:
			if m.Header.MsgType == wire.FileError {
				var e wire.FileErrorBody
				_ = wire.DecodeBody(m.Body, &e)
				return e.Error
			}
			if m.Header.MsgType != wire.FileAck {
				pr.t.Fatalf("unexpected %s during upload", m.Header.MsgType)
			}
			if m.Header.StringProp(wire.PropUserID) != "u1" {
				pr.t.Fatalf("ack %v does not copy the chunk's header", m.Header.Properties)
			}
		default:
			return ""
		}
	}
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// noTemp fails when dir holds a leftover temporary file.
func noTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tether-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestFlows(t *testing.T) {
	dir := t.TempDir()
	pr := newPeer(t, Options{})
	for _, size := range []int{0, 1, 4096, 4097, 40960, 100000, 300000} {
		data := random(t, size)
		p := filepath.Join(dir, "f"+strconv.Itoa(size))
		if e := pr.put(wire.UploadBody{Path: sp(p)}, data); e != "" {
			t.Fatalf("put %d: %s", size, e)
		}
		got, e := pr.get(p)
		if e != "" || !bytes.Equal(got, data) {
			t.Fatalf("get %d: %q, %d bytes", size, e, len(got))
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("default mode %v", fi.Mode())
		}
	}
	// stat
	pr.send(wire.FileStat, user1, enc(t, wire.FilePathBody{Path: sp(filepath.Join(dir, "f4097"))}))
	m := pr.recv()
	var fi wire.FileInfoBody
	if err := wire.DecodeBody(m.Body, &fi); err != nil || m.Header.MsgType != wire.FileInfo {
		t.Fatalf("stat: %s %v", m.Header.MsgType, err)
	}
	if *fi.Size != 4097 || !os.FileMode(*fi.Mode).IsRegular() || fi.ModTime == nil {
		t.Errorf("file_info %+v", fi)
	}
	noTemp(t, dir)
	// Stray messages as upstream answers them.
	for _, c := range []struct{ typ, want string }{
		{wire.FileAck, "no file transfer in progress"},
		{wire.FileChunk, "no file transfer in progress"},
		{"bogus", "session: filetransfer message type 'bogus' not supported"},
	} {
		pr.send(c.typ, map[string]interface{}{wire.PropUserID: "u1", wire.PropOffset: int64(7)}, nil)
		if got := pr.errText(c.typ); got != c.want {
			t.Errorf("%s: %q, want %q", c.typ, got, c.want)
		}
	}
}

func TestOneTransferAtATime(t *testing.T) {
	dir := t.TempDir()
	pr := newPeer(t, Options{})
	p := filepath.Join(dir, "a")
	pr.send(wire.FilePut, user1, enc(t, wire.UploadBody{Path: sp(p)}))
	if m := pr.recv(); m.Header.MsgType != wire.FileAck {
		t.Fatal(m.Header.MsgType)
	}
	pr.send(wire.FileGet, user1, enc(t, wire.FilePathBody{Path: sp(p)}))
	if got := pr.errText(wire.FileGet); got != "another file transfer is in progress" {
		t.Errorf("%q", got)
	}
	pr.send(wire.FileChunk, props(0), []byte("x"))
	pr.send(wire.FileChunk, props(1), nil)
	for {
		m := pr.recv()
		if o, _ := m.Header.IntProp(wire.PropOffset); m.Header.MsgType == wire.FileAck && o == 1 {
			break
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "x" {
		t.Errorf("content %q", b)
	}
}

func TestChunkOffsetWire(t *testing.T) {
	// The server reads offsets with a type assertion to int64: d3 form.
	b, err := wire.Marshal(chunk("s", 4096, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte{0xa6, 'o', 'f', 'f', 's', 'e', 't', 0xd3, 0, 0, 0, 0, 0, 0, 0x10, 0}) {
		t.Errorf("offset not int64 d3 in % x", b)
	}
}

func limits(l FileLimits) Options {
	return Options{Limits: Limits{Enabled: true, FileTransfer: l}}
}

func TestUploadInterrupted(t *testing.T) {
	dir := t.TempDir()
	old := []byte("old content")
	for _, c := range []struct {
		name string
		opts Options
		end  func(pr *peer)
		want string
	}{
		{"peer error", Options{}, func(pr *peer) {
			pr.send(wire.FileError, user1, enc(t, wire.FileErrorBody{Error: "user cancelled"}))
		}, ""},
		{"link dropped", Options{}, func(pr *peer) { pr.s.Close() }, ""},
		{"bad offset", Options{}, func(pr *peer) { pr.send(wire.FileChunk, props(1), []byte("zz")) }, "received unexpected chunk offset"},
		{"missing offset", Options{}, func(pr *peer) { pr.send(wire.FileChunk, user1, []byte("zz")) }, "invalid file chunk message: missing offset property"},
		{"unexpected type", Options{}, func(pr *peer) { pr.send("bogus", user1, nil) }, "received unexpected message type 'bogus' during file upload"},
		{"size limit", limits(FileLimits{AllowOverwrite: true, MaxFileSize: 6000}), func(pr *peer) {
			pr.send(wire.FileChunk, props(4096), random(t, 4096))
		}, "failed to write file chunk: the file size is over the limit"},
		{"rx limit", limits(FileLimits{AllowOverwrite: true, Counters: RateLimits{MaxBytesRxPerMinute: 5000}}), func(pr *peer) {
			pr.send(wire.FileChunk, props(4096), random(t, 4096))
		}, "failed to write file chunk: received bytes limit exhausted"},
		{"ack timeout", Options{AckTimeout: 100 * time.Millisecond}, func(pr *peer) {}, "file transfer timed out waiting for file chunk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, "target")
			if err := os.WriteFile(p, old, 0o644); err != nil {
				t.Fatal(err)
			}
			pr := newPeer(t, c.opts)
			pr.send(wire.FilePut, user1, enc(t, wire.UploadBody{Path: sp(p)}))
			if m := pr.recv(); m.Header.MsgType != wire.FileAck {
				t.Fatalf("%s %q", m.Header.MsgType, m.Body)
			}
			pr.send(wire.FileChunk, props(0), random(t, 4096))
			c.end(pr)
			if c.want != "" {
				for {
					m := pr.recv()
					if m.Header.MsgType == wire.FileError {
						var e wire.FileErrorBody
						_ = wire.DecodeBody(m.Body, &e)
						if e.Error != c.want {
							t.Errorf("error %q, want %q", e.Error, c.want)
						}
						break
					}
				}
			}
			pr.s.Close()
			pr.p.Wait()
			if b, _ := os.ReadFile(p); !bytes.Equal(b, old) {
				t.Errorf("old file changed: %q", b)
			}
			noTemp(t, dir)
		})
	}
}

func TestDownloadAckTimeoutAndStall(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "big")
	if err := os.WriteFile(p, random(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	pr := newPeer(t, Options{AckTimeout: 200 * time.Millisecond})
	pr.send(wire.FileGet, user1, enc(t, wire.FilePathBody{Path: sp(p)}))
	chunks := 0
	for {
		m := pr.recv()
		if m.Header.MsgType == wire.FileError {
			break
		}
		chunks++
	}
	if chunks != wire.FileWindowChunks {
		t.Errorf("%d chunks sent without an ack, want %d", chunks, wire.FileWindowChunks)
	}
	// The session serves the next request after the timeout.
	if _, e := pr.get(p); e != "" {
		t.Fatal(e)
	}
}

// A link that takes no chunk for the ack timeout ends the download (the
// sends of a burst share one re-armed timer), and the session serves the
// next request.
func TestDownloadSendStall(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	data := random(t, 100000)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	pr := newPeer(t, Options{AckTimeout: 200 * time.Millisecond})
	pr.out.ch = make(chan *wire.ProtoMsg) // nothing is taken until read
	pr.send(wire.FileGet, user1, enc(t, wire.FilePathBody{Path: sp(p)}))
	time.Sleep(600 * time.Millisecond)
	got, e := pr.get(p)
	if e != "" {
		t.Fatal(e)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want the file's %d", len(got), len(data))
	}
}

func TestAckErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, random(t, 200000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		props map[string]interface{}
		typ   string
		want  string
	}{
		{"blank", user1, wire.FileAck, "ack message: offset property cannot be blank"},
		{"type", map[string]interface{}{wire.PropUserID: "u1", wire.PropOffset: "x"}, wire.FileAck, "invalid offset data type: require int64"},
		{"unexpected", user1, wire.FileChunk, "received unexpected message type 'file_chunk'; expected 'ack'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pr := newPeer(t, Options{})
			pr.send(wire.FileGet, user1, enc(t, wire.FilePathBody{Path: sp(p)}))
			pr.recv()
			pr.send(c.typ, c.props, nil)
			for {
				m := pr.recv()
				if m.Header.MsgType == wire.FileError {
					var e wire.FileErrorBody
					_ = wire.DecodeBody(m.Body, &e)
					if e.Error != c.want {
						t.Errorf("%q, want %q", e.Error, c.want)
					}
					return
				}
			}
		})
	}
}

func TestLimitDenials(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	os.MkdirAll(filepath.Join(data, "sub"), 0o755)
	os.WriteFile(filepath.Join(data, "f"), []byte("hello"), 0o644)
	os.WriteFile(filepath.Join(root, "secret"), []byte("s"), 0o644)
	os.Symlink(filepath.Join(data, "f"), filepath.Join(data, "inlink"))
	unix.Mkfifo(filepath.Join(data, "fifo"), 0o644)
	me, _ := user.Current()
	g, _ := user.LookupGroupId(me.Gid)
	base := FileLimits{Chroot: data}
	with := func(f func(l *FileLimits)) FileLimits {
		l := base
		f(&l)
		return l
	}
	mode := func(m uint32) *uint32 { return &m }
	size := func(n int64) *int64 { return &n }
	for _, c := range []struct {
		name string
		l    FileLimits
		typ  string
		path string
		up   *wire.UploadBody
		want string
	}{
		{"get outside chroot", base, wire.FileGet, filepath.Join(root, "secret"), nil, "access denied: the target file path is outside chroot"},
		{"stat outside chroot", base, wire.FileStat, filepath.Join(root, "secret"), nil, "access denied: the target file path is outside chroot"},
		{"prefix is not a parent", base, wire.FileGet, data + "base", nil, "access denied: the target file path is outside chroot"},
		{"get symlink", base, wire.FileGet, filepath.Join(data, "inlink"), nil, "access denied: forbidden to follow the link"},
		{"stat symlink", base, wire.FileStat, filepath.Join(data, "inlink"), nil, "access denied: forbidden to follow the link"},
		{"regular only", base, wire.FileGet, filepath.Join(data, "fifo"), nil, "access denied: only regular files are allowed"},
		{"regular only dir", base, wire.FileGet, filepath.Join(data, "sub"), nil, "access denied: only regular files are allowed"},
		{"owner get", with(func(l *FileLimits) { l.OwnerGet = []string{"nobody-else"} }), wire.FileGet, filepath.Join(data, "f"), nil, "access denied: the file owner does not match"},
		{"group get", with(func(l *FileLimits) { l.GroupGet = []string{"nogroup-else"} }), wire.FileGet, filepath.Join(data, "f"), nil, "access denied: the file group does not match"},
		{"size get", with(func(l *FileLimits) { l.MaxFileSize = 4 }), wire.FileGet, filepath.Join(data, "f"), nil, "access denied: the file size is over the limit"},
		{"size put", with(func(l *FileLimits) { l.MaxFileSize = 4 }), wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "n")), Size: size(5)}, "access denied: the file size is over the limit"},
		{"put outside", base, wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(root, "n"))}, "access denied: the target file path is outside chroot"},
		{"put dotdot", base, wire.FilePut, "", &wire.UploadBody{Path: sp(data + "/sub/../n")}, "access denied: the target file path is outside chroot"},
		{"overwrite", base, wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "f"))}, "access denied: forbidden to overwrite the file"},
		{"owner put", with(func(l *FileLimits) { l.AllowOverwrite = true; l.OwnerPut = "nobody" }), wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "f"))}, "access denied: the file owner does not match"},
		{"group put", with(func(l *FileLimits) { l.AllowOverwrite = true; l.GroupPut = "nogroup-x" }), wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "f"))}, "access denied: the file group does not match"},
		{"suid posix", base, wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "n")), Mode: mode(0o4755)}, "access denied: the set uid mode is forbidden"},
		{"sgid posix", base, wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "n")), Mode: mode(0o2755)}, "access denied: the set uid mode is forbidden"},
		{"suid go", base, wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "n")), Mode: mode(1<<23 | 0o755)}, "access denied: the set uid mode is forbidden"},
		{"tx rate", with(func(l *FileLimits) { l.Counters.MaxBytesTxPerMinute = 1 }), wire.FileGet, "", nil, ""},
		{"irregular", base, wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "fifo"))}, "conflicting file path: cannot overwrite irregular file"},
		{"directory", base, wire.FilePut, "", &wire.UploadBody{Path: sp(filepath.Join(data, "sub"))}, "conflicting file path: cannot overwrite directory"},
		{"blank", base, wire.FileGet, "", nil, "invalid request parameters: path: cannot be blank"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "tx rate" {
				return // covered by TestRates
			}
			_ = g
			pr := newPeer(t, limits(c.l))
			var body []byte
			if c.up != nil {
				body = enc(t, *c.up)
			} else {
				body = enc(t, wire.FilePathBody{Path: sp(c.path)})
			}
			pr.send(c.typ, user1, body)
			if got := pr.errText(c.typ); got != c.want {
				t.Errorf("%q, want %q", got, c.want)
			}
			noTemp(t, data)
		})
	}
}

func TestRates(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, random(t, 20000), 0o644)
	pr := newPeer(t, limits(FileLimits{AllowOverwrite: true, Counters: RateLimits{MaxBytesTxPerMinute: 30000, MaxBytesRxPerMinute: 30000}}))
	if _, e := pr.get(p); e != "" {
		t.Fatal(e)
	}
	if _, e := pr.get(p); e != "failed to send file chunk: transmitted bytes limit exhausted" {
		t.Errorf("second download: %q", e)
	}
	pr.send(wire.FileGet, user1, enc(t, wire.FilePathBody{Path: sp(p)}))
	if got := pr.errText(wire.FileGet); got != "access denied: transmitted bytes limit exhausted" {
		t.Errorf("third download: %q", got)
	}
	if e := pr.put(wire.UploadBody{Path: sp(p)}, random(t, 20000)); e != "" {
		t.Fatal(e)
	}
	if e := pr.put(wire.UploadBody{Path: sp(p)}, random(t, 20000)); e != "failed to write file chunk: received bytes limit exhausted" {
		t.Errorf("second upload: %q", e)
	}
	noTemp(t, dir)
}

func TestUploadModesAndUmask(t *testing.T) {
	dir := t.TempDir()
	mode := func(m uint32) *uint32 { return &m }
	for _, c := range []struct {
		name string
		o    Options
		mode *uint32
		want os.FileMode
	}{
		{"no limits keeps perm only", Options{}, mode(0o4755), 0o755},
		{"suid allowed", limits(FileLimits{AllowSuid: true}), mode(0o4755), 0o755 | os.ModeSetuid},
		{"umask masks the request", limits(FileLimits{Umask: "027"}), mode(0o666), 0o640},
		{"default", Options{}, nil, 0o644},
	} {
		t.Run(c.name, func(t *testing.T) {
			pr := newPeer(t, c.o)
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if e := pr.put(wire.UploadBody{Path: sp(p), Mode: c.mode}, []byte("x")); e != "" {
				t.Fatal(e)
			}
			fi, err := os.Stat(p)
			if err != nil || fi.Mode() != c.want {
				t.Errorf("mode %v, want %v (%v)", fi.Mode(), c.want, err)
			}
		})
	}
	if _, err := New(limits(FileLimits{Umask: "9"})); err == nil {
		t.Error("bad umask accepted")
	}
}

func TestSrcPathIntoDirectory(t *testing.T) {
	dir := t.TempDir()
	pr := newPeer(t, Options{})
	if e := pr.put(wire.UploadBody{Path: sp(dir), SrcPath: sp("/home/me/name.txt")}, []byte("x")); e != "" {
		t.Fatal(e)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "name.txt")); string(b) != "x" {
		t.Errorf("content %q", b)
	}
}

var _ = errors.New
