package handover

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/tstest/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// notifySocket is a datagram socket standing in for systemd's: it
// receives what the daemon sends to NOTIFY_SOCKET, descriptors included.
type notifySocket struct {
	t  *testing.T
	fd int
}

func newNotifySocket(t *testing.T, abstract bool) *notifySocket {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	if abstract {
		name = "@tether-test-" + filepath.Base(t.TempDir())
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	t.Setenv("NOTIFY_SOCKET", name)
	return &notifySocket{t: t, fd: fd}
}

// recv returns the next message's text and descriptors.
func (s *notifySocket) recv() (string, []int) {
	s.t.Helper()
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		s.t.Fatal(err)
	}
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
	n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		s.t.Fatalf("notify socket: %v", err)
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		s.t.Fatal(err)
	}
	for _, m := range msgs {
		r, err := unix.ParseUnixRights(&m)
		if err != nil {
			s.t.Fatal(err)
		}
		fds = append(fds, r...)
	}
	return string(buf[:n]), fds
}

// empty says no message waits.
func (s *notifySocket) empty() bool {
	_, _, err := unix.Recvfrom(s.fd, make([]byte, 1), unix.MSG_DONTWAIT|unix.MSG_PEEK)
	return err == unix.EAGAIN
}

// testShell is a real shell on a real pty, as the daemon's are: a
// session leader with the pty's slave as its terminal.
type testShell struct {
	pid    int
	master *os.File
	ptn    int
}

func startShell(t *testing.T) *testShell {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "exec sleep 600")
	m, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); m.Close() })
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return &testShell{pid: cmd.Process.Pid, master: m, ptn: n}
}

// dup is a descriptor of the shell's master as the store hands it back.
func (s *testShell) dup(t *testing.T) *os.File {
	fd, err := unix.FcntlInt(s.master.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), "dup")
}

func isOpen(f *os.File) bool {
	raw, err := f.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	_ = raw.Control(func(fd uintptr) { _, err := unix.FcntlInt(fd, unix.F_GETFD, 0); open = err == nil })
	return open
}

func TestFDStoreOverNotifySocket(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(map[bool]string{false: "path", true: "abstract"}[abstract], func(t *testing.T) {
			ns := newNotifySocket(t, abstract)
			sh := startShell(t)
			st := NewFDStore()
			if !st.Enabled() {
				t.Fatal("store disabled with NOTIFY_SOCKET set")
			}
			key := Key(sh.pid, time.Now())
			if err := st.Put(key, sh.master); err != nil {
				t.Fatal(err)
			}
			text, fds := ns.recv()
			if text != "FDSTORE=1\nFDNAME="+key {
				t.Fatalf("store message %q", text)
			}
			if len(fds) != 1 {
				t.Fatalf("%d descriptors passed, want 1", len(fds))
			}
			got, err := unix.IoctlGetInt(fds[0], unix.TIOCGPTN)
			unix.Close(fds[0])
			if err != nil || got != sh.ptn {
				t.Fatalf("passed descriptor is pty %d (%v), want the master of /dev/pts/%d", got, err, sh.ptn)
			}
			if err := st.Remove(key); err != nil {
				t.Fatal(err)
			}
			if text, fds := ns.recv(); text != "FDSTOREREMOVE=1\nFDNAME="+key || len(fds) != 0 {
				t.Fatalf("remove message %q with %d descriptors", text, len(fds))
			}
		})
	}
	t.Run("FDSTORE=0", func(t *testing.T) {
		newNotifySocket(t, false)
		t.Setenv("FDSTORE", "0")
		if NewFDStore().Enabled() {
			t.Fatal("store enabled although systemd keeps no descriptors")
		}
	})
}

func TestRecordRoundTrip(t *testing.T) {
	d, err := OpenDir(filepath.Join(t.TempDir(), "sessions"))
	if err != nil {
		t.Fatal(err)
	}
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := Record{Key: Key(1234, started), SessionID: "sid", UserID: "u1", Pid: 1234, Started: started, Cols: 80, Rows: 24,
		HandedOver: true, Detached: true, IdleLeft: time.Minute, AbsoluteLeft: time.Hour, DetachedLeft: 3 * time.Second,
		Written: started.Add(time.Second), Ring: []byte("0\r\n1\r\n\x00\xff")}
	if err := d.Write(r); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.file(r.Key))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record file mode %v %v, want 0600", fi.Mode(), err)
	}
	got, err := d.read(r.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Started.Equal(r.Started) || !got.Written.Equal(r.Written) || !bytes.Equal(got.Ring, r.Ring) {
		t.Fatalf("round trip: %+v, want %+v", got, r)
	}
	got.Started, got.Written, got.Ring = r.Started, r.Written, r.Ring
	if got.Key != r.Key || got.SessionID != r.SessionID || got.UserID != r.UserID || got.Pid != r.Pid || got.Cols != 80 ||
		got.IdleLeft != time.Minute || got.AbsoluteLeft != time.Hour || got.DetachedLeft != 3*time.Second || !got.HandedOver || !got.Detached {
		t.Fatalf("round trip: %+v, want %+v", got, r)
	}
	if err := d.Remove(r.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.file(r.Key)); !os.IsNotExist(err) {
		t.Fatal("record not removed")
	}
	if ents, _ := os.ReadDir(d.path); len(ents) != 0 {
		t.Fatalf("left in the directory: %v", ents)
	}
}

// The records' directory decides whose terminal a shell goes to: one
// that is a symlink or open to others is refused.
func TestOpenDirRefusesUntrusted(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"mode 0755": open, "symlink": link, "owner": other} {
		if _, err := OpenDir(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Collect restores a record and a descriptor only when they belong
// together; everything else is cleaned up, once, and never attached.
func TestCollectMatchesAndCleans(t *testing.T) {
	ns := newNotifySocket(t, false)
	store := NewFDStore()
	d, err := OpenDir(filepath.Join(t.TempDir(), "sessions"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := func(sh *testShell, user string) Record {
		return Record{Key: Key(sh.pid, now), SessionID: "sid-" + user, UserID: user, Pid: sh.pid, Started: now}
	}
	write := func(r Record) {
		if err := d.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	good, swapA, swapB, badMode, badOwner, noFD, noRec := startShell(t), startShell(t), startShell(t), startShell(t),
		startShell(t), startShell(t), startShell(t)

	var files []NamedFile
	add := func(name string, f *os.File) *os.File {
		files = append(files, NamedFile{Name: name, File: f})
		return f
	}
	write(rec(good, "alice"))
	goodFD := add(Key(good.pid, now), good.dup(t))

	// Two records whose descriptors were swapped: each pid leads the
	// other's pty.
	write(rec(swapA, "bob"))
	write(rec(swapB, "carol"))
	swapFDs := []*os.File{add(Key(swapA.pid, now), swapB.dup(t)), add(Key(swapB.pid, now), swapA.dup(t))}

	// A record readable by others, and one owned by someone else.
	write(rec(badMode, "dave"))
	if err := os.Chmod(d.file(Key(badMode.pid, now)), 0o644); err != nil {
		t.Fatal(err)
	}
	badModeFD := add(Key(badMode.pid, now), badMode.dup(t))
	write(rec(badOwner, "erin"))
	if err := os.Chown(d.file(Key(badOwner.pid, now)), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	badOwnerFD := add(Key(badOwner.pid, now), badOwner.dup(t))

	// A record whose shell died (its pid is not a live shell).
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadShell := startShell(t)
	deadRec := rec(deadShell, "frank")
	deadRec.Pid, deadRec.Key = dead.Process.Pid, Key(dead.Process.Pid, now)
	write(deadRec)
	deadFD := add(deadRec.Key, deadShell.dup(t))

	// A record without its descriptor, a descriptor without its record,
	// one that is no session's, and a descriptor that is no pty.
	write(rec(noFD, "grace"))
	noRecFD := add(Key(noRec.pid, now), noRec.dup(t))
	foreign := add("listener", noRec.dup(t))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	notPty := Record{Key: Key(good.pid+100000, now), UserID: "heidi", Pid: good.pid, Started: now}
	write(notPty)
	add(notPty.Key, r)
	// A unit that is gone.
	unitShell := startShell(t)
	unitRec := rec(unitShell, "ivan")
	unitRec.Unit = "tether-session-x.service"
	write(unitRec)
	unitFD := add(unitRec.Key, unitShell.dup(t))
	// A record naming a unit or a cgroup that no session has: never
	// adopted into it.
	foreignUnitShell := startShell(t)
	foreignUnit := rec(foreignUnitShell, "judy")
	foreignUnit.Unit = "sshd.service"
	write(foreignUnit)
	foreignUnitFD := add(foreignUnit.Key, foreignUnitShell.dup(t))
	foreignCgShell := startShell(t)
	foreignCg := rec(foreignCgShell, "kim")
	foreignCg.Cgroup = "/sys/fs/cgroup/system.slice/../user.slice"
	write(foreignCg)
	foreignCgFD := add(foreignCg.Key, foreignCgShell.dup(t))
	// Junk a crash may leave.
	if err := os.WriteFile(filepath.Join(d.path, ".tether-1-2.json.tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	got := Collect(d, files, store, Checks{UnitAlive: func(string) bool { return false }}, slog.New(slog.NewTextHandler(&logs, nil)))
	if len(got) != 1 || got[0].UserID != "alice" || got[0].Master != goodFD || got[0].Pid != good.pid {
		t.Fatalf("restored %+v, want only alice's session", got)
	}
	if !isOpen(goodFD) {
		t.Fatal("the restored master was closed")
	}
	defer goodFD.Close()
	for i, f := range append([]*os.File{badModeFD, badOwnerFD, deadFD, noRecFD, foreign, r, unitFD, foreignUnitFD, foreignCgFD}, swapFDs...) {
		if isOpen(f) {
			t.Errorf("descriptor %d left open", i)
		}
	}
	ents, _ := os.ReadDir(d.path)
	if len(ents) != 1 || ents[0].Name() != Key(good.pid, now)+".json" {
		t.Errorf("records left: %v, want only alice's", ents)
	}
	// Every dropped descriptor is removed from the store, once.
	removed := map[string]int{}
	for !ns.empty() {
		text, fds := ns.recv()
		name, ok := strings.CutPrefix(text, "FDSTOREREMOVE=1\nFDNAME=")
		if !ok || len(fds) != 0 {
			t.Fatalf("unexpected store message %q", text)
		}
		removed[name]++
	}
	for _, name := range []string{Key(swapA.pid, now), Key(swapB.pid, now), Key(badMode.pid, now), Key(badOwner.pid, now),
		deadRec.Key, Key(noRec.pid, now), "listener", notPty.Key, unitRec.Key, foreignUnit.Key, foreignCg.Key} {
		if removed[name] != 1 {
			t.Errorf("%s removed from the store %d times, want 1", name, removed[name])
		}
	}
	if removed[Key(good.pid, now)] != 0 {
		t.Error("the restored session was removed from the store")
	}
	for _, want := range []string{"not the pty of this descriptor", "open to others", "not owned by uid", "its shell is gone",
		"pty master is gone", "no session record", "not a session's descriptor", "not a pty master", "unit tether-session-x.service is gone",
		"sshd.service\\\" is not a session unit's name", "is not a session cgroup",
		"unexpected file"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line saying %q:\n%s", want, logs.String())
		}
	}
	// Once: a second run finds nothing to clean and nothing to restore
	// but alice's.
	logs.Reset()
	again := Collect(d, nil, store, Checks{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if len(again) != 0 || strings.Count(logs.String(), "\n") != 1 {
		t.Fatalf("second collect: %v\n%s", again, logs.String())
	}
}

func TestPtyDevMatchesKernel(t *testing.T) {
	sh := startShell(t)
	st, err := readStat(sh.pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.ttyNr != ptyDev(sh.ptn) || st.session != sh.pid {
		t.Fatalf("stat tty_nr %#x session %d; want %#x (pts %d) and %d", st.ttyNr, st.session, ptyDev(sh.ptn), sh.ptn, sh.pid)
	}
	// Past 255 the minor spills into the high bits (new_encode_dev).
	if got, want := ptyDev(300), uint64(300&0xff|136<<8|(300&^0xff)<<12); got != want {
		t.Fatalf("pts 300: %#x, want %#x", got, want)
	}
}

// ListenFiles reads the descriptors systemd or an upgrade passed, by name,
// and makes them close-on-exec.
func TestListenFiles(t *testing.T) {
	sh := startShell(t)
	start, err := highestFD()
	if err != nil {
		t.Fatal(err)
	}
	start += 10
	for i := 0; i < 2; i++ {
		if err := unix.Dup2(int(sh.master.Fd()), start+i); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(listenPID, strconv.Itoa(os.Getpid()))
	t.Setenv(listenFDs, "2")
	t.Setenv(listenNames, "tether-1-2:tether-3-4")
	t.Setenv(startEnv, strconv.Itoa(start))
	got, err := ListenFiles()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "tether-1-2" || got[1].Name != "tether-3-4" {
		t.Fatalf("got %+v", got)
	}
	for _, f := range got {
		flags, err := unix.FcntlInt(f.File.Fd(), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s not close-on-exec", f.Name)
		}
		f.File.Close()
	}
	if _, ok := os.LookupEnv(listenFDs); ok {
		t.Error("LISTEN_FDS left in the environment for the shells")
	}
	// Another process's descriptors are not ours.
	t.Setenv(listenPID, "1")
	t.Setenv(listenFDs, "1")
	if got, _ := ListenFiles(); len(got) != 0 {
		t.Fatalf("took descriptors meant for pid 1: %v", got)
	}
}
