package filetransfer

import (
	"github.com/tether-agent/tether/internal/identity"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/wire"
)

// BenchmarkUploadAsAccount: the whole process's CPU time per MiB of an
// upload written as nobody (the ack window batched on its thread).
func BenchmarkUploadAsAccount(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		b.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := b.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	p, err := New(Options{Identity: &identity.Identity{Name: "nobody", UID: uint32(uid), GID: uint32(gid)}})
	if err != nil {
		b.Fatal(err)
	}
	out := &sender{ch: make(chan *wire.ProtoMsg, 1024)}
	sess := p.Open("sid-1", out).(*session)
	defer func() { sess.Close(); p.Wait() }()
	msg := func(typ string, off int64, body []byte) *wire.ProtoMsg {
		return &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: typ, SessionID: "sid-1",
			Properties: map[string]interface{}{wire.PropOffset: off}}, Body: body}
	}
	data := make([]byte, 4<<20)
	var r0, r1 unix.Rusage
	b.ResetTimer()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &r0)
	for i := 0; i < b.N; i++ {
		req, _ := wire.EncodeBody(wire.UploadBody{Path: sp(filepath.Join(dir, "f"))})
		sess.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FilePut, SessionID: "sid-1"}, Body: req})
		if m := <-out.ch; m.Header.MsgType != wire.FileAck {
			b.Fatal(m.Header.MsgType)
		}
		// The server's window: at most 20 chunks unacknowledged.
		var sent, acked int64
		for sent < int64(len(data)) || acked < int64(len(data)) {
			for sent < int64(len(data)) && sent < acked+20*wire.FileChunkSize {
				sess.Handle(msg(wire.FileChunk, sent, data[sent:sent+wire.FileChunkSize]))
				sent += wire.FileChunkSize
			}
			m := <-out.ch
			if m.Header.MsgType != wire.FileAck {
				b.Fatal(m.Header.MsgType, string(m.Body))
			}
			off, _ := m.Header.IntProp(wire.PropOffset)
			acked = off + wire.FileChunkSize
		}
		sess.Handle(msg(wire.FileChunk, sent, nil))
		if m := <-out.ch; m.Header.MsgType != wire.FileAck {
			b.Fatal(m.Header.MsgType, string(m.Body))
		}
	}
	_ = unix.Getrusage(unix.RUSAGE_SELF, &r1)
	ns := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano())
	b.ReportMetric(float64(ns)/float64(b.N)/4/1e6, "cpu-ms/MiB")
}
