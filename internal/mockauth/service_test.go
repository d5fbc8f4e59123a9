package mockauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/mockserver/authapi"
	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func connect(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func newService(t *testing.T, addr string, opts Options) *Service {
	t.Helper()
	svc, err := New(testLogger(t), connect(t, addr), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return svc
}

// watcher collects JwtTokenStateChange signals seen by a separate client.
type watcher struct {
	ch chan *dbus.Signal
}

func watch(t *testing.T, addr string) *watcher {
	t.Helper()
	conn := connect(t, addr)
	if err := conn.AddMatchSignal(
		dbus.WithMatchInterface(auth.Interface),
		dbus.WithMatchMember(auth.SignalMember),
		dbus.WithMatchObjectPath(auth.ObjectPath),
	); err != nil {
		t.Fatalf("AddMatchSignal: %v", err)
	}
	w := &watcher{ch: make(chan *dbus.Signal, 64)}
	conn.Signal(w.ch)
	return w
}

func (w *watcher) next(t *testing.T) (token, url string) {
	t.Helper()
	select {
	case sig := <-w.ch:
		if sig.Name != auth.SignalJwtTokenStateChange || len(sig.Body) != 2 {
			t.Fatalf("unexpected signal %s %v", sig.Name, sig.Body)
		}
		return sig.Body[0].(string), sig.Body[1].(string)
	case <-time.After(5 * time.Second):
		t.Fatal("no JwtTokenStateChange within 5s")
		return "", ""
	}
}

func (w *watcher) expect(t *testing.T, token, url string) {
	t.Helper()
	gotToken, gotURL := w.next(t)
	if gotToken != token || gotURL != url {
		t.Fatalf("signal (%q, %q), want (%q, %q)", gotToken, gotURL, token, url)
	}
}

func getJwtToken(t *testing.T, conn *dbus.Conn) (string, string) {
	t.Helper()
	var token, url string
	err := conn.Object(auth.BusName, auth.ObjectPath).Call(auth.MethodGetJwtToken, 0).Store(&token, &url)
	if err != nil {
		t.Fatalf("GetJwtToken: %v", err)
	}
	return token, url
}

func fetchJwtToken(t *testing.T, conn *dbus.Conn) bool {
	t.Helper()
	var ok bool
	if err := conn.Object(auth.BusName, auth.ObjectPath).Call(auth.MethodFetchJwtToken, 0).Store(&ok); err != nil {
		t.Fatalf("FetchJwtToken: %v", err)
	}
	return ok
}

func TestFixedMode(t *testing.T) {
	addr := dbustest.Start(t)
	w := watch(t, addr)
	svc := newService(t, addr, Options{Token: "tok-1", ServerURL: "https://a.example"})
	client := connect(t, addr)

	w.expect(t, "tok-1", "https://a.example") // announced at start
	if tok, url := getJwtToken(t, client); tok != "tok-1" || url != "https://a.example" {
		t.Fatalf("GetJwtToken = (%q, %q)", tok, url)
	}

	svc.Set("tok-2", "https://b.example")
	w.expect(t, "tok-2", "https://b.example")
	svc.Clear()
	w.expect(t, "", "")
	if tok, url := getJwtToken(t, client); tok != "" || url != "" {
		t.Fatalf("GetJwtToken after Clear = (%q, %q), want empty", tok, url)
	}

	// Re-authentication in fixed mode restores the configured credentials.
	if !fetchJwtToken(t, client) {
		t.Fatal("FetchJwtToken = false")
	}
	w.expect(t, "tok-2", "https://b.example")

	if err := svc.Rotate(context.Background()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	tok, url := w.next(t)
	if tok == "" || tok == "tok-2" || url != "https://b.example" {
		t.Fatalf("after Rotate: (%q, %q), want a new token for https://b.example", tok, url)
	}
	if got := svc.FetchCount(); got != 1 {
		t.Fatalf("FetchCount = %d, want 1", got)
	}
}

func TestFetchFailures(t *testing.T) {
	addr := dbustest.Start(t)
	w := watch(t, addr)
	svc := newService(t, addr, Options{Token: "tok", ServerURL: "https://a.example"})
	client := connect(t, addr)
	w.expect(t, "tok", "https://a.example")

	svc.SetFetchFailure(FetchRejected)
	if fetchJwtToken(t, client) {
		t.Fatal("FetchJwtToken = true with FetchRejected")
	}
	svc.SetFetchFailure(FetchAuthFails)
	if !fetchJwtToken(t, client) {
		t.Fatal("FetchJwtToken = false with FetchAuthFails")
	}
	w.expect(t, "", "")
	svc.SetFetchFailure(FetchWorks)
	if !fetchJwtToken(t, client) {
		t.Fatal("FetchJwtToken = false with FetchWorks")
	}
	w.expect(t, "tok", "https://a.example")
	if got := svc.FetchCount(); got != 3 {
		t.Fatalf("FetchCount = %d, want 3", got)
	}
}

func TestNameTakenAndReleased(t *testing.T) {
	addr := dbustest.Start(t)
	first, err := New(testLogger(t), connect(t, addr), Options{Token: "a", ServerURL: "u"})
	if err != nil {
		t.Fatalf("first New: %v", err)
	}
	conn2 := connect(t, addr)
	if _, err := New(testLogger(t), conn2, Options{Token: "b", ServerURL: "u"}); err == nil || !strings.Contains(err.Error(), "already owned") {
		t.Fatalf("second New: err = %v, want 'already owned'", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	second, err := New(testLogger(t), conn2, Options{Token: "b", ServerURL: "u"})
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	defer second.Close()
	if tok, _ := getJwtToken(t, connect(t, addr)); tok != "b" {
		t.Fatalf("token from the second service = %q, want b", tok)
	}
}

func TestIntrospection(t *testing.T) {
	addr := dbustest.Start(t)
	newService(t, addr, Options{})
	var xml string
	err := connect(t, addr).Object(auth.BusName, auth.ObjectPath).
		Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml)
	if err != nil {
		t.Fatalf("Introspect: %v", err)
	}
	for _, want := range []string{auth.Interface, "GetJwtToken", "FetchJwtToken", auth.SignalMember} {
		if !strings.Contains(xml, want) {
			t.Errorf("introspection lacks %q:\n%s", want, xml)
		}
	}
}

// fakeServer implements the auth_requests contract: it rejects the first
// `pending` requests with 401 and then issues numbered tokens, verifying
// each request's signature.
type fakeServer struct {
	t       *testing.T
	mu      sync.Mutex
	pending int
	issued  int
	macs    []string
}

func (s *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != AuthRequestsPath {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req AuthRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.t.Errorf("server: bad JSON: %v", err)
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	var id map[string]string
	if err := json.Unmarshal([]byte(req.IDData), &id); err != nil {
		s.t.Errorf("server: id_data is not JSON: %v", err)
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(SignatureHeader))
	if err != nil {
		s.t.Errorf("server: signature header not base64: %v", err)
	}
	if err := authapi.VerifyPEM(req.PubKey, body, sig); err != nil {
		s.t.Errorf("server: %v", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.macs = append(s.macs, id["mac"])
	if s.pending > 0 {
		s.pending--
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	s.issued++
	fmt.Fprintf(w, "jwt-%d\n", s.issued)
}

func TestServerMode(t *testing.T) {
	for _, keyType := range []string{"ed25519", "rsa"} {
		t.Run(keyType, func(t *testing.T) {
			fs := &fakeServer{t: t, pending: 2}
			srv := httptest.NewServer(fs)
			defer srv.Close()
			key, err := GenerateKey(keyType)
			if err != nil {
				t.Fatal(err)
			}
			addr := dbustest.Start(t)
			w := watch(t, addr)
			svc := newService(t, addr, Options{
				Server: srv.URL, MAC: "aa:bb:cc:dd:ee:ff", Key: key,
				RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond,
			})
			// The first attempt fails (401): announced once as empty.
			w.expect(t, "", "")
			w.expect(t, "jwt-1", srv.URL)
			if tok, url := getJwtToken(t, connect(t, addr)); tok != "jwt-1" || url != srv.URL {
				t.Fatalf("GetJwtToken = (%q, %q)", tok, url)
			}
			if err := svc.Rotate(context.Background()); err != nil {
				t.Fatalf("Rotate: %v", err)
			}
			w.expect(t, "jwt-2", srv.URL)
			fs.mu.Lock()
			defer fs.mu.Unlock()
			if len(fs.macs) != 4 || fs.macs[0] != "aa:bb:cc:dd:ee:ff" {
				t.Fatalf("server saw macs %v, want 4 requests from aa:bb:cc:dd:ee:ff", fs.macs)
			}
		})
	}
}

func TestServerURLOverride(t *testing.T) {
	srv := httptest.NewServer(&fakeServer{t: t})
	defer srv.Close()
	addr := dbustest.Start(t)
	w := watch(t, addr)
	newService(t, addr, Options{Server: srv.URL, ServerURL: "http://127.0.0.1:1"})
	w.expect(t, "jwt-1", "http://127.0.0.1:1")
}

func TestControlSocket(t *testing.T) {
	addr := dbustest.Start(t)
	w := watch(t, addr)
	svc := newService(t, addr, Options{Token: "tok", ServerURL: "https://a.example"})
	w.expect(t, "tok", "https://a.example")
	sock := filepath.Join(dbustest.ShortTempDir(t), "ctl")

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- svc.ServeControl(ctx, sock) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeControl: %v", err)
		}
	}()

	ctl := func(cmd string) (string, error) {
		t.Helper()
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		var (
			out string
			err error
		)
		// The listener may not be up yet on the first command.
		for i := 0; i < 100; i++ {
			out, err = Control(cctx, sock, cmd)
			if err == nil || !strings.Contains(err.Error(), "control socket") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return out, err
	}
	must := func(cmd, want string) {
		t.Helper()
		got, err := ctl(cmd)
		if err != nil || got != want {
			t.Fatalf("%q = (%q, %v), want %q", cmd, got, err, want)
		}
	}

	must("get", "token=tok url=https://a.example")
	must("set t2 https://b.example", "")
	w.expect(t, "t2", "https://b.example")
	must("clear", "")
	w.expect(t, "", "")
	must("get", "token= url=")
	must("fetch", "true")
	w.expect(t, "t2", "https://b.example")
	must("count fetch", "0")
	fetchJwtToken(t, connect(t, addr))
	w.expect(t, "t2", "https://b.example")
	must("count fetch", "1")
	must("fail-fetch reject", "")
	must("fetch", "false")
	must("fail-fetch none", "")
	must("rotate", "")
	if tok, _ := w.next(t); tok == "t2" || tok == "" {
		t.Fatalf("rotate announced %q, want a new token", tok)
	}
	for _, bad := range []string{"bogus", "set onlyone", "fail-fetch sometimes", "count"} {
		if _, err := ctl(bad); err == nil {
			t.Errorf("%q succeeded, want an error", bad)
		}
	}
}
