package utmp

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLayoutRoundTrip(t *testing.T) {
	rec := Record{Type: UserProcess, PID: 4242, Line: "pts/17", ID: "s/17", User: "tether-shell",
		Host: "tether:" + strings.Repeat("u", 300), Session: 4242, Time: time.Unix(1_700_000_000, 123456000)}
	for _, tc := range []struct {
		name string
		l    *layout
		// where tv_sec must sit, from glibc's struct
		size, tvSec int
	}{
		{"384 (x86-64, 32-bit)", &layout384, 384, 340},
		{"400 (aarch64)", &layout400, 400, 344},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.l.encode(&rec)
			if len(b) != tc.size {
				t.Fatalf("record is %d bytes, want %d", len(b), tc.size)
			}
			if got := byteOrder.Uint32(b[tc.tvSec:]); got != 1_700_000_000 {
				t.Errorf("tv_sec at %d = %d", tc.tvSec, got)
			}
			if !bytes.Equal(b[offLine:offLine+7], []byte("pts/17\x00")) || b[offType] != UserProcess {
				t.Errorf("line or type misplaced: % x", b[:16])
			}
			got, err := tc.l.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			want := rec
			want.Host = want.Host[:hostSize]
			if got != want {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
			if _, err := tc.l.decode(b[1:]); err == nil {
				t.Error("a short record decoded")
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"tether:abc-123":        "tether:abc-123",
		"tether:\x1b]0;pwn\x07": "tether:?]0;pwn?",
		"tether:é":              "tether:??",
	} {
		if got := printable(in, 256); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
	if got := printable(strings.Repeat("x", 300), hostSize); len(got) != hostSize {
		t.Errorf("clipped to %d", len(got))
	}
}

// files makes an empty utmp and wtmp.
func files(t *testing.T) Files {
	t.Helper()
	d := t.TempDir()
	f := Files{Utmp: filepath.Join(d, "utmp"), Wtmp: filepath.Join(d, "wtmp")}
	for _, p := range []string{f.Utmp, f.Wtmp} {
		if err := os.WriteFile(p, nil, 0o664); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func read(t *testing.T, path string) []Record {
	t.Helper()
	recs, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestLoginLogout(t *testing.T) {
	f := files(t)
	// A stale entry of the same line, and another line's, as a crashed
	// sshd would leave them: the first is replaced, the second kept.
	other := Record{Type: UserProcess, PID: 7, Line: "pts/1", ID: "ts/1", User: "root", Time: time.Unix(5, 0)}
	stale := Record{Type: DeadProcess, PID: 8, Line: "pts/3", ID: "ts/3", Time: time.Unix(6, 0)}
	if err := os.WriteFile(f.Utmp, append(native.encode(&other), native.encode(&stale)...), 0o664); err != nil {
		t.Fatal(err)
	}
	r := New(f)
	e, err := r.Login(Login{Line: "pts/3", User: "tether-shell", Host: "tether:user-1", PID: 99})
	if err != nil {
		t.Fatal(err)
	}
	u := read(t, f.Utmp)
	if len(u) != 2 || u[0] != other {
		t.Fatalf("utmp after login: %+v", u)
	}
	want := Record{Type: UserProcess, PID: 99, Line: "pts/3", ID: "ts/3", User: "tether-shell", Host: "tether:user-1", Session: 99}
	got := u[1]
	if d := time.Since(got.Time); d < 0 || d > time.Minute {
		t.Errorf("time %v", got.Time)
	}
	got.Time = time.Time{}
	if got != want {
		t.Errorf("utmp entry:\n got %+v\nwant %+v", got, want)
	}

	if err := e.Logout(); err != nil {
		t.Fatal(err)
	}
	u = read(t, f.Utmp)
	if len(u) != 2 || u[1].Type != DeadProcess || u[1].Line != "pts/3" || u[1].User != "" || u[1].PID != 99 {
		t.Fatalf("utmp after logout: %+v", u)
	}
	w := read(t, f.Wtmp)
	if len(w) != 2 || w[0].Type != UserProcess || w[0].Host != "tether:user-1" ||
		w[1].Type != DeadProcess || w[1].Line != "pts/3" || w[1].User != "" {
		t.Fatalf("wtmp: %+v", w)
	}

	// A new line is added at the end.
	e2, err := r.Login(Login{Line: "pts/12", User: "u", Host: "h", PID: 5})
	if err != nil {
		t.Fatal(err)
	}
	if u = read(t, f.Utmp); len(u) != 3 || u[2].ID != "s/12" {
		t.Fatalf("utmp with a second line: %+v", u)
	}
	_ = e2.Logout()
}

func TestWtmpPartialRecordCut(t *testing.T) {
	f := files(t)
	if err := os.WriteFile(f.Wtmp, make([]byte, native.size+10), 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := New(f).Login(Login{Line: "pts/0", User: "u", Host: "h", PID: 1}); err != nil {
		t.Fatal(err)
	}
	if w := read(t, f.Wtmp); len(w) != 2 || w[1].Line != "pts/0" {
		t.Fatalf("wtmp: %+v", w)
	}
}

func TestMissingFilesAndNil(t *testing.T) {
	if New(Files{}) != nil {
		t.Error("a recorder without files")
	}
	var r *Recorder
	e, err := r.Login(Login{Line: "pts/0"})
	if e != nil || err != nil || e.Logout() != nil {
		t.Error("a nil recorder recorded")
	}
	d := t.TempDir()
	_, err = New(Files{Utmp: filepath.Join(d, "absent")}).Login(Login{Line: "pts/0"})
	if err == nil {
		t.Error("a missing utmp was not reported")
	}
	if _, err := os.Stat(filepath.Join(d, "absent")); err == nil {
		t.Error("a missing utmp was created")
	}
}

// TestWaitsForLock: a writer holding glibc's kind of lock (a
// process-associated fcntl lock) holds the login back until it lets go.
func TestWaitsForLock(t *testing.T) {
	f := files(t)
	h, err := os.OpenFile(f.Utmp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fl := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(h.Fd(), unix.F_SETLK, &fl); err != nil {
		t.Fatal(err)
	}
	const held = 200 * time.Millisecond
	released := make(chan struct{})
	defer func() { <-released }() // before the Close above
	go func() {
		defer close(released)
		time.Sleep(held)
		fl := unix.Flock_t{Type: unix.F_UNLCK}
		_ = unix.FcntlFlock(h.Fd(), unix.F_SETLK, &fl)
	}()
	start := time.Now()
	if _, err := New(Files{Utmp: f.Utmp}).Login(Login{Line: "pts/0", User: "u", PID: 1}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < held {
		t.Errorf("wrote after %v, while the lock was held for %v", d, held)
	}
}

// TestSystemTools: the host's who, last and utmpdump read the files.
func TestSystemTools(t *testing.T) {
	f := files(t)
	r := New(f)
	e, err := r.Login(Login{Line: "pts/7", User: "root", Host: "tether:user-42", PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("%s is not installed on this host", name)
		}
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	if out := run("who", f.Utmp); !strings.Contains(out, "root") || !strings.Contains(out, "pts/7") ||
		!strings.Contains(out, "(tether:user-42)") {
		t.Errorf("who does not list the session:\n%s", out)
	}
	if out := run("utmpdump", f.Utmp); !strings.Contains(out, "[7] [") || !strings.Contains(out, "[ts/7]") ||
		!strings.Contains(out, "[tether:user-42") {
		t.Errorf("utmpdump:\n%s", out)
	}
	if err := e.Logout(); err != nil {
		t.Fatal(err)
	}
	if out := run("who", f.Utmp); strings.Contains(out, "pts/7") {
		t.Errorf("who still lists the ended session:\n%s", out)
	}
	if out := run("last", "-f", f.Wtmp); !strings.Contains(out, "root") || !strings.Contains(out, "pts/7") ||
		!strings.Contains(out, "tether:user-42") || strings.Contains(out, "still logged in") {
		t.Errorf("last does not show the ended session:\n%s", out)
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		f      Files
		wtmpdb bool
		want   []string
	}{
		{Files{Utmp: "/run/utmp", Wtmp: "/var/log/wtmp"}, false, []string{"utmp /run/utmp (who, w) and wtmp /var/log/wtmp (last)"}},
		{Files{Utmp: "/run/utmp"}, true, []string{"utmp /run/utmp", "no wtmp", "wtmpdb", "not written"}},
		{Files{}, false, []string{"no utmp or wtmp", "session_open"}},
	} {
		got := tc.f.describe(tc.wtmpdb)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v, wtmpdb %v: %q lacks %q", tc.f, tc.wtmpdb, got, w)
			}
		}
	}
}
