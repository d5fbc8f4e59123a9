package filetransfer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/wire"
)

// TestSweepStale: on start, the temporary files the journal names are
// removed, and nothing else: not a file of the same naming it does not
// name, not a symlink, not a file of another owner, not in a directory
// that is no longer the one recorded, not outside the Chroot. A second
// daemon on the same journal leaves the first one's files alone.
func TestSweepStale(t *testing.T) {
	id := nobody(t)
	top := t.TempDir()
	os.Chmod(filepath.Dir(top), 0o755)
	os.Chmod(top, 0o755)
	data := filepath.Join(top, "data")
	os.Mkdir(data, 0o777)
	os.Chmod(data, 0o777)
	state := t.TempDir()
	journalDir := filepath.Join(state, "uploads")
	os.Mkdir(journalDir, 0o700)

	var dst unix.Stat_t
	if err := unix.Stat(data, &dst); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, uid int) {
		t.Helper()
		p := filepath.Join(data, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, -1); err != nil {
			t.Fatal(err)
		}
	}
	write := func(recName string, r record) {
		t.Helper()
		b, _ := json.Marshal(r)
		if err := os.WriteFile(filepath.Join(journalDir, recName), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ours := record{Dir: []byte(data), Dev: uint64(dst.Dev), Ino: uint64(dst.Ino), UID: id.UID}
	with := func(name string) record { r := ours; r.Name = []byte(name); return r }

	mk(".a.tether-0123456789ab", int(id.UID)) // ours: removed
	write("r1", with(".a.tether-0123456789ab"))
	mk(".\xff\nbin.tether-0123456789ab", int(id.UID)) // ours, not UTF-8: removed
	write("r0", with(".\xff\nbin.tether-0123456789ab"))
	mk(".b.tether-0123456789ab", int(id.UID)) // our naming, not recorded: stays
	mk(".a.tether-0123456789ac", int(id.UID)) // a near name: stays
	os.Symlink(filepath.Join(data, ".b.tether-0123456789ab"), filepath.Join(data, ".c.tether-0123456789ab"))
	write("r2", with(".c.tether-0123456789ab")) // a symlink: stays, and its target
	mk(".d.tether-0123456789ab", 0)             // root's: stays
	write("r3", with(".d.tether-0123456789ab"))
	mk(".e.tether-0123456789ab", int(id.UID)) // the directory is not the recorded one
	r := with(".e.tether-0123456789ab")
	r.Ino++
	write("r4", r)
	mk("precious", int(id.UID)) // not our naming
	write("r5", with("precious"))
	mk(".f.tether-0123456789ab", int(id.UID)) // recorded under another path, outside the Chroot
	r = with(".f.tether-0123456789ab")
	r.Dir = []byte(top + "/data/../data")
	write("r6", r)
	write("r7", record{Dir: []byte("/etc"), Name: []byte(".passwd.tether-0123456789ab"), UID: id.UID}) // nothing there
	os.WriteFile(filepath.Join(journalDir, "r8"), []byte("{garbage"), 0o600)

	o := limits(FileLimits{Chroot: data})
	o.Identity, o.StateDir = id, state
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.journal.close)
	if p.journal == nil {
		t.Fatal("no journal")
	}
	want := []string{".a.tether-0123456789ac", ".b.tether-0123456789ab", ".c.tether-0123456789ab",
		".d.tether-0123456789ab", ".e.tether-0123456789ab", ".f.tether-0123456789ab", "precious"}
	var got []string
	ents, _ := os.ReadDir(data)
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if len(got) != len(want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("left %v, want %v", got, want)
		}
	}
	if ents, _ := os.ReadDir(journalDir); len(ents) != 0 {
		t.Errorf("records left: %v", ents)
	}

	// Uploads, complete or refused, leave no record behind.
	s := &sender{ch: make(chan *wire.ProtoMsg, 64)}
	sess := p.Open("sid-1", s).(*session)
	pr := &peer{t: t, p: p, s: sess, out: s}
	t.Cleanup(func() { sess.Close(); p.Wait() })
	// While one runs, its temporary file is on record (written as root
	// although the upload runs on nobody's thread).
	pr.send(wire.FilePut, user1, enc(t, wire.UploadBody{Path: sp(filepath.Join(data, "up"))}))
	if m := pr.recv(); m.Header.MsgType != wire.FileAck {
		t.Fatalf("put_file: %s %q", m.Header.MsgType, m.Body)
	}
	if ents, _ := os.ReadDir(journalDir); len(ents) != 1 {
		t.Errorf("running upload: %d records, want 1", len(ents))
	}
	pr.send(wire.FileChunk, props(0), nil)
	if m := pr.recv(); m.Header.MsgType != wire.FileAck {
		t.Fatalf("EOF: %s %q", m.Header.MsgType, m.Body)
	}
	if e := pr.put(wire.UploadBody{Path: sp(filepath.Join(data, "up2"))}, []byte("x")); e != "" {
		t.Fatal(e)
	}
	if ents, _ := os.ReadDir(journalDir); len(ents) != 0 {
		t.Errorf("records left after an upload: %v", ents)
	}

	// A second daemon on the same journal does not take it.
	mk(".g.tether-0123456789ab", int(id.UID))
	write("r9", with(".g.tether-0123456789ab"))
	p2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if p2.journal != nil {
		p2.journal.close()
		t.Error("a second daemon took the journal")
	}
	if _, err := os.Lstat(filepath.Join(data, ".g.tether-0123456789ab")); err != nil {
		t.Error("a second daemon removed the first one's temporary file")
	}
}
