package auth_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/tstest/leakcheck"
)

// secretPrefix starts every token the tests use; logs must never show it.
const secretPrefix = "SECRET-"

// logCapture records log output, echoes it to the test log, and fails the
// test if a token ever appears in it.
type logCapture struct {
	t   testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

func newLogger(t testing.TB) (*slog.Logger, *logCapture) {
	lc := &logCapture{t: t}
	t.Cleanup(func() {
		if strings.Contains(lc.String(), secretPrefix) {
			t.Errorf("a token appeared in the logs:\n%s", lc.String())
		}
	})
	return slog.New(slog.NewTextHandler(lc, &slog.HandlerOptions{Level: slog.LevelDebug})), lc
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logCapture) count(substr string) int {
	return strings.Count(l.String(), substr)
}

// runSource runs src until the test ends and checks that Run returns nil
// promptly once its context is cancelled.
func runSource(t testing.TB, src auth.Source) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// next returns the next update or fails after timeout.
func next(t testing.TB, src auth.Source, timeout time.Duration) auth.Credentials {
	t.Helper()
	select {
	case c := <-src.Updates():
		return c
	case <-time.After(timeout):
		t.Fatalf("no credentials update within %v", timeout)
		return auth.Credentials{}
	}
}

func expectNext(t testing.TB, src auth.Source, want auth.Credentials) {
	t.Helper()
	if got := next(t, src, 5*time.Second); got != want {
		t.Fatalf("update %v, want %v", got, want)
	}
}

func expectNone(t testing.TB, src auth.Source, d time.Duration) {
	t.Helper()
	select {
	case c := <-src.Updates():
		t.Fatalf("unexpected update %v", c)
	case <-time.After(d):
	}
}

// eventually polls cond every 10 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t testing.TB, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rawService is a minimal provider that answers GetJwtToken but never
// emits signals by itself, to test that the client asks on its own.
type rawService struct {
	conn       *dbus.Conn
	mu         sync.Mutex
	token, url string
}

func (r *rawService) GetJwtToken() (string, string, *dbus.Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.token, r.url, nil
}

func (r *rawService) FetchJwtToken() (bool, *dbus.Error) { return true, nil }

func newRawService(t testing.TB, addr, token, url string) *rawService {
	t.Helper()
	r := &rawService{conn: dial(t, addr), token: token, url: url}
	if err := r.conn.Export(r, auth.ObjectPath, auth.Interface); err != nil {
		t.Fatalf("export: %v", err)
	}
	return r
}

// own requests the name; it returns when the bus has answered.
func (r *rawService) own(t testing.TB) {
	t.Helper()
	reply, err := r.conn.RequestName(auth.BusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v, %v", reply, err)
	}
}

// goroutineBaseline returns a check that fails the test unless the number
// of goroutines falls back to the baseline. The check ends as soon as they
// have; its 10 s only has to catch a leak, and exits on a loaded -race
// run can be slow.
func goroutineBaseline(t testing.TB) func() {
	t.Helper()
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			now := runtime.NumGoroutine()
			if now <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("goroutines: %d before, %d after\n%s", before, now, buf[:n])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestMain(m *testing.M) { leakcheck.Main(m) }

// logTimes returns the time= of every log line containing substr.
func logTimes(t testing.TB, l *logCapture, substr string) []time.Time {
	t.Helper()
	var out []time.Time
	for _, line := range strings.Split(l.String(), "\n") {
		if !strings.Contains(line, substr) {
			continue
		}
		v, ok := strings.CutPrefix(strings.Fields(line)[0], "time=")
		if !ok {
			t.Fatalf("log line without a time: %q", line)
		}
		ts, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, ts)
	}
	return out
}
