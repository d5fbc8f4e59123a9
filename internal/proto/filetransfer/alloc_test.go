package filetransfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/tether-agent/tether/internal/identity"
	"github.com/tether-agent/tether/internal/wire"
)

// frameSink is a proto.FrameSender that reads what the test needs of
// each frame (type, offset, body length) in place, without decoding it,
// and gives the buffer back as the link does once it has written it: it
// allocates nothing itself, so the allocations counted around it are the
// session's alone.
type frameSink struct{ ch chan sunk }

type sunk struct {
	typ  string
	off  int64
	body int
}

func newFrameSink() *frameSink { return &frameSink{ch: make(chan sunk, 64)} }

func (s *frameSink) Send(ctx context.Context, m *wire.ProtoMsg) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	return s.SendFrame(ctx, b, len(b), func() {})
}

func (s *frameSink) SendFrame(ctx context.Context, b []byte, held int, release func()) error {
	f := peekFrame(b)
	release()
	select {
	case s.ch <- f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// peekFrame reads a file-transfer frame's type, int64 offset and body
// length where the encoder puts them.
func peekFrame(b []byte) sunk {
	var f sunk
	if i := bytes.Index(b, []byte("\xa3typ")); i >= 0 && i+5 < len(b) && b[i+4]&0xe0 == 0xa0 {
		n := int(b[i+4] & 0x1f)
		if i+5+n <= len(b) {
			switch string(b[i+5 : i+5+n]) {
			case wire.FileChunk:
				f.typ = wire.FileChunk
			case wire.FileAck:
				f.typ = wire.FileAck
			case wire.FileError:
				f.typ = wire.FileError
			default:
				f.typ = "other"
			}
		}
	}
	if i := bytes.Index(b, []byte("\xa6offset\xd3")); i >= 0 && i+16 <= len(b) {
		f.off = int64(binary.BigEndian.Uint64(b[i+8:]))
	}
	if i := bytes.Index(b, []byte("\xa4body")); i >= 0 && i+7 <= len(b) {
		switch b[i+5] {
		case 0xc4:
			f.body = int(b[i+6])
		case 0xc5:
			f.body = int(binary.BigEndian.Uint16(b[i+6:]))
		case 0xc6:
			f.body = int(binary.BigEndian.Uint32(b[i+6:]))
		}
	}
	return f
}

// allocIdentity is the account transfers run as: nobody when the test
// runs as root, as the daemon does, so that the writes go through the
// account's thread.
func allocIdentity(tb testing.TB) *identity.Identity {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		tb.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &identity.Identity{Name: "nobody", UID: uint32(uid), GID: uint32(gid)}
}

// serverFrame is a file-transfer frame as the server relays it (props
// offset and user_id), encoded once; at sets its offset in place, so
// that the server's side allocates nothing per frame.
type serverFrame struct {
	b   []byte
	off int // where the offset's 8 bytes are
}

func newServerFrame(tb testing.TB, typ string, body []byte) *serverFrame {
	const mark = 0x0102030405060708
	b, err := wire.Marshal(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: typ, SessionID: "sid-1",
		Properties: map[string]interface{}{wire.PropOffset: int64(mark), wire.PropUserID: "a5e1a2a4-5c7e-4d40-9ef7-1b8b5e0a4a11"}}, Body: body})
	if err != nil {
		tb.Fatal(err)
	}
	i := bytes.Index(b, binary.BigEndian.AppendUint64(nil, mark))
	if i < 0 {
		tb.Fatal("offset not found in the frame")
	}
	return &serverFrame{b: b, off: i}
}

func (f *serverFrame) at(off int64) []byte {
	binary.BigEndian.PutUint64(f.b[f.off:], uint64(off))
	return f.b
}

// uploadWindows starts an upload into a fresh file and returns what
// sends the server's next window of chunks (decoded with the link's
// pool) and waits for their ack.
func uploadWindows(tb testing.TB) func() {
	dir := tb.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	p, err := New(Options{Identity: allocIdentity(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	out := newFrameSink()
	sess := p.Open("sid-1", out).(*session)
	tb.Cleanup(func() { sess.Close(); p.Wait() })
	req, _ := wire.EncodeBody(wire.UploadBody{Path: sp(filepath.Join(dir, "f"))})
	sess.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FilePut, SessionID: "sid-1"}, Body: req})
	if m := <-out.ch; m.typ != wire.FileAck {
		tb.Fatalf("%+v", m)
	}
	link := wire.NewBodyPool(64)
	chunk := newServerFrame(tb, wire.FileChunk, make([]byte, wire.FileChunkSize))
	var sent int64
	return func() {
		last := sent + (wire.FileAckEvery-1)*wire.FileChunkSize
		for i := 0; i < wire.FileAckEvery; i++ {
			m, err := wire.UnmarshalPooled(chunk.at(sent), link)
			if err != nil {
				panic(err)
			}
			sess.Handle(m)
			sent += wire.FileChunkSize
		}
		for {
			a := <-out.ch
			if a.typ != wire.FileAck {
				panic(fmt.Sprintf("not an ack: %+v", a))
			}
			if a.off == last {
				return
			}
		}
	}
}

// downloadWindows starts a download of a sparse file of the given
// windows and returns what takes the next window of chunks and acks it
// as the server does (decoded with the link's pool).
func downloadWindows(tb testing.TB, windows int) func() {
	dir := tb.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	// One window more than taken: the download stays in its steady
	// state (no EOF) throughout.
	if err := os.Truncate(src, int64(windows+1)*wire.FileAckEvery*wire.FileChunkSize); err != nil {
		tb.Fatal(err)
	}
	p, err := New(Options{Identity: allocIdentity(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	out := newFrameSink()
	sess := p.Open("sid-1", out).(*session)
	tb.Cleanup(func() { sess.Close(); p.Wait() })
	req, _ := wire.EncodeBody(wire.FilePathBody{Path: sp(src)})
	sess.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FileGet, SessionID: "sid-1"}, Body: req})
	link := wire.NewBodyPool(64)
	ack := newServerFrame(tb, wire.FileAck, nil)
	var got int64
	return func() {
		for i := 0; i < wire.FileAckEvery; i++ {
			c := <-out.ch
			if c.typ != wire.FileChunk || c.off != got || c.body != wire.FileChunkSize {
				panic(fmt.Sprintf("unexpected %+v, want a chunk at %d", c, got))
			}
			got += int64(c.body)
		}
		m, err := wire.UnmarshalPooled(ack.at(got), link)
		if err != nil {
			panic(err)
		}
		sess.Handle(m)
	}
}

// In steady state a transfer allocates nothing per chunk, either way:
// the server's window of ten chunks and its ack (upload: ten chunks
// decoded from the link's pool, written, acked with a pooled frame;
// download: ten chunks read and encoded into pooled frames, the ack
// decoded from the pool), counted over the whole process. Garbage per
// chunk made a 50 MiB transfer collect several times, and a fresh
// daemon's first collection alone maps a megabyte.
func TestTransferPerChunkAllocFree(t *testing.T) {
	const runs = 100
	tests := []struct {
		name   string
		window func(testing.TB) func()
	}{
		{"upload", uploadWindows},
		{"download", func(tb testing.TB) func() { return downloadWindows(tb, runs+2) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			window := tt.window(t)
			window() // warm the pools
			if n := testing.AllocsPerRun(runs, window); n != 0 && !raceEnabled {
				t.Errorf("%v allocations per window of %d chunks and its ack, want 0", n, wire.FileAckEvery)
			}
		})
	}
}

// BenchmarkUploadChunk and BenchmarkDownloadChunk: one op is one chunk
// (and a tenth of an ack); run with -benchmem for allocs/op.
func BenchmarkUploadChunk(b *testing.B) {
	window := uploadWindows(b)
	window()
	b.SetBytes(wire.FileChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += wire.FileAckEvery {
		window()
	}
}

func BenchmarkDownloadChunk(b *testing.B) {
	windows := b.N/wire.FileAckEvery + 2
	window := downloadWindows(b, windows)
	window()
	b.SetBytes(wire.FileChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += wire.FileAckEvery {
		window()
	}
}
