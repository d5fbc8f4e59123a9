package health

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// datagram is one notification the fake systemd received.
type datagram struct {
	msg string
	at  time.Time
}

// fakeSystemd is a NOTIFY_SOCKET listener, like the one PID 1 provides.
type fakeSystemd struct {
	conn *net.UnixConn
	msgs chan datagram
	done chan struct{}
}

// listenNotify starts a fake notify socket and points NOTIFY_SOCKET at it.
func listenNotify(t *testing.T) *fakeSystemd {
	t.Helper()
	// Short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listening on fake notify socket: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	f := &fakeSystemd{conn: conn, msgs: make(chan datagram, 1024), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			f.msgs <- datagram{msg: string(buf[:n]), at: time.Now()}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-f.done
	})
	return f
}

// next waits for the next notification.
func (f *fakeSystemd) next(t *testing.T, timeout time.Duration) datagram {
	t.Helper()
	select {
	case d := <-f.msgs:
		return d
	case <-time.After(timeout):
		t.Fatalf("no notification within %v", timeout)
		return datagram{}
	}
}

// collect gathers every notification that arrives within d.
func (f *fakeSystemd) collect(d time.Duration) []datagram {
	var out []datagram
	deadline := time.After(d)
	for {
		select {
		case m := <-f.msgs:
			out = append(out, m)
		case <-deadline:
			return out
		}
	}
}

// recorder is a slog.Handler that keeps records for assertions.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// at returns the messages logged at exactly level.
func (r *recorder) at(level slog.Level) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		if rec.Level == level {
			s := rec.Message
			rec.Attrs(func(a slog.Attr) bool {
				s += " " + a.String()
				return true
			})
			out = append(out, s)
		}
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recs)
}

func TestNotifierMessages(t *testing.T) {
	sd := listenNotify(t)
	rec := &recorder{}
	n := NewNotifier(slog.New(rec))

	n.Ready()
	n.Status("link connected\n2 sessions  for 1 user")
	n.Status(Summary{Link: "connected", Sessions: 2, Users: 1}.String())
	n.Stopping()

	want := []string{
		"READY=1",
		"STATUS=link connected 2 sessions for 1 user",
		"STATUS=link connected; 2 sessions for 1 user",
		"STOPPING=1",
	}
	for i, w := range want {
		got := sd.next(t, 2*time.Second).msg
		if !regexp.MustCompile("^" + w + "$").MatchString(got) {
			t.Fatalf("notification %d = %q, want %q", i, got, w)
		}
	}
	if c := rec.count(); c != 0 {
		t.Fatalf("logged %d records on success, want none: %q", c, rec.at(slog.LevelWarn))
	}
}

// TestNotifierWithoutSocket: outside systemd every call is a silent no-op.
func TestNotifierWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	rec := &recorder{}
	n := NewNotifier(slog.New(rec))
	n.Ready()
	n.Status("x")
	n.Stopping()

	m := New(nil)
	m.Register("router", time.Millisecond) // stale almost at once
	ctx, cancel := context.WithTimeout(context.Background(), 350*time.Millisecond)
	defer cancel()
	n.RunWatchdog(ctx, m)
	for _, l := range []slog.Level{slog.LevelWarn, slog.LevelInfo} {
		if got := rec.at(l); len(got) != 0 {
			t.Fatalf("logged at %v without NOTIFY_SOCKET: %q", l, got)
		}
	}
}

// TestNotifierSendFailure: a NOTIFY_SOCKET nobody listens on gives one
// warning, not one per message, and a later success is logged.
func TestNotifierSendFailure(t *testing.T) {
	sd := listenNotify(t)
	good := os.Getenv("NOTIFY_SOCKET")
	t.Setenv("NOTIFY_SOCKET", filepath.Join(filepath.Dir(good), "absent"))
	rec := &recorder{}
	n := NewNotifier(slog.New(rec))
	n.Ready()
	n.Status("a")
	n.Stopping()
	if w := rec.at(slog.LevelWarn); len(w) != 1 || !strings.Contains(w[0], "READY=1") {
		t.Fatalf("warnings = %q, want exactly one naming READY=1", w)
	}
	t.Setenv("NOTIFY_SOCKET", good)
	n.Ready()
	if got := sd.next(t, 2*time.Second).msg; got != "READY=1" {
		t.Fatalf("after recovery got %q", got)
	}
	if i := rec.at(slog.LevelInfo); len(i) != 1 {
		t.Fatalf("recovery info logs = %q, want one", i)
	}
}

func TestRunWatchdogDisabled(t *testing.T) {
	tests := []struct {
		name      string
		usec, pid string
		wantError bool
	}{
		{name: "no WATCHDOG_USEC", usec: "", pid: ""},
		{name: "watchdog meant for another process", usec: "200000", pid: "1"},
		{name: "garbage WATCHDOG_USEC", usec: "soon", pid: "", wantError: true},
		{name: "negative WATCHDOG_USEC", usec: "-5", pid: "", wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sd := listenNotify(t)
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			rec := &recorder{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				// Never cancelled: RunWatchdog must return by itself.
				NewNotifier(slog.New(rec)).RunWatchdog(context.Background(), New(nil))
			}()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				t.Fatal("RunWatchdog did not return although the watchdog is off")
			}
			if got := sd.collect(50 * time.Millisecond); len(got) != 0 {
				t.Fatalf("sent %v with the watchdog off", got)
			}
			if errs := rec.at(slog.LevelError); (len(errs) == 1) != tt.wantError {
				t.Fatalf("error logs = %q, want error: %v", errs, tt.wantError)
			}
		})
	}
}

// beater is a loop that answers probes from its select, the way a real
// loop does, until wedged: then it blocks in the middle of handling one,
// as a loop stuck on a lock would.
type beater struct {
	loop *Loop
	gate sync.Mutex // held while wedged
	stop chan struct{}
	done chan struct{}
}

func startBeater(l *Loop) *beater {
	b := &beater{loop: l, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			select {
			case <-b.stop:
				return
			case <-l.Probe():
				b.gate.Lock()
				// An empty critical section: wait here while wedged.
				b.gate.Unlock()
				l.Beat()
			}
		}
	}()
	return b
}

func (b *beater) setWedged(w bool) {
	if w {
		b.gate.Lock()
	} else {
		b.gate.Unlock()
	}
}

func (b *beater) close() {
	close(b.stop)
	<-b.done
}

// TestWatchdog runs the whole cycle against a fake systemd: pings at half
// the interval while healthy, none while a loop is wedged (with one error
// log and an explanatory STATUS), pings again after recovery, and nothing
// after the context ends.
func TestWatchdog(t *testing.T) {
	const (
		interval   = 200 * time.Millisecond // WATCHDOG_USEC
		period     = interval / 2
		maxSilence = 150 * time.Millisecond
	)
	sd := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	m := New(nil)
	router := startBeater(m.Register("router", maxSilence))
	defer router.close()
	janitor := startBeater(m.Register("session-janitor", maxSilence))
	defer janitor.close()
	// A disconnected link: parked and silent, it must not count.
	m.Register("link-reader", maxSilence).Park()

	rec := &recorder{}
	n := NewNotifier(slog.New(rec))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.RunWatchdog(ctx, m)
	}()
	n.Ready()
	n.Status("link connected; no sessions")
	for got := ""; got != "STATUS=link connected; no sessions"; {
		if got = sd.next(t, time.Second).msg; got != "READY=1" && got != "WATCHDOG=1" && !strings.HasPrefix(got, "STATUS=") {
			t.Fatalf("unexpected notification %q at start", got)
		}
	}

	// Healthy: about one ping per period.
	const window = 1 * time.Second
	pings := sd.collect(window)
	for _, p := range pings {
		if p.msg != "WATCHDOG=1" && p.msg != "READY=1" {
			t.Fatalf("unexpected notification while healthy: %q", p.msg)
		}
	}
	if want := int(window / period); len(pings) < want-3 || len(pings) > want+2 {
		t.Fatalf("%d pings in %v, want about %d (one per %v)", len(pings), window, want, period)
	}
	for i := 1; i < len(pings); i++ {
		if gap := pings[i].at.Sub(pings[i-1].at); gap > interval {
			t.Fatalf("gap of %v between pings exceeds the watchdog interval %v", gap, interval)
		}
	}

	// Wedge one loop: within maxSilence+period the pings stop, the status
	// says why, and nothing more is sent while it stays wedged.
	janitor.setWedged(true)
	var status string
	for status == "" {
		d := sd.next(t, maxSilence+2*period+time.Second)
		switch {
		case d.msg == "WATCHDOG=1":
		case strings.HasPrefix(d.msg, "STATUS="):
			status = d.msg
		default:
			t.Fatalf("unexpected notification %q", d.msg)
		}
	}
	if status != "STATUS=unhealthy: stalled loops: session-janitor" {
		t.Fatalf("status = %q", status)
	}
	if got := sd.collect(3 * interval); len(got) != 0 {
		t.Fatalf("still notifying while a loop is wedged: %v", got)
	}
	errs := rec.at(slog.LevelError)
	if len(errs) != 1 || !strings.Contains(errs[0], "stale=session-janitor") {
		t.Fatalf("error logs = %q, want one naming session-janitor", errs)
	}

	// Recover: the status is restored and pings resume.
	janitor.setWedged(false)
	if got := sd.next(t, 2*period+time.Second).msg; got != "STATUS=link connected; no sessions" {
		t.Fatalf("after recovery got %q, want the previous status back", got)
	}
	if got := sd.next(t, time.Second).msg; got != "WATCHDOG=1" {
		t.Fatalf("after recovery got %q, want WATCHDOG=1", got)
	}
	if infos := rec.at(slog.LevelInfo); len(infos) != 1 {
		t.Fatalf("recovery logs = %q, want one", infos)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
	n.Stopping()
	for got := ""; got != "STOPPING=1"; {
		// A ping may have raced the cancel; anything else is wrong.
		if got = sd.next(t, time.Second).msg; got != "STOPPING=1" && got != "WATCHDOG=1" {
			t.Fatalf("got %q, want STOPPING=1", got)
		}
	}
	if got := sd.collect(2 * period); len(got) != 0 {
		t.Fatalf("notifications after RunWatchdog returned: %v", got)
	}
	if errs := rec.at(slog.LevelError); len(errs) != 1 {
		t.Fatalf("error logs = %q", errs)
	}
}
