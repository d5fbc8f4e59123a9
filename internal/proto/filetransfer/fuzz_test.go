package filetransfer

import (
	"testing"

	"github.com/tether-agent/tether/internal/wire"
)

// FuzzHandle feeds arbitrary bodies and offsets to a session confined to
// a temporary Chroot: it must answer, never panic, never leave a
// temporary file.
func FuzzHandle(f *testing.F) {
	for _, typ := range []string{wire.FileStat, wire.FileGet, wire.FilePut, wire.FileChunk, wire.FileAck} {
		f.Add(typ, []byte{0x81, 0xa4, 'p', 'a', 't', 'h', 0xa2, '/', 'x'}, int64(0))
	}
	f.Fuzz(func(t *testing.T, typ string, body []byte, off int64) {
		dir := t.TempDir()
		pr := newPeer(t, limits(FileLimits{Chroot: dir, AllowOverwrite: true}))
		pr.send(typ, props(off), body)
		pr.send(wire.FileChunk, props(off), body)
		pr.send(wire.FileChunk, props(0), nil)
		pr.s.Close()
		pr.p.Wait()
		noTemp(t, dir)
	})
}
