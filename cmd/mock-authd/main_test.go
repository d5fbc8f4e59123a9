package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/mockauth"
	"github.com/tether-agent/tether/internal/tstest/dbustest"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// binPath is the mock-authd binary built once for all tests.
var binPath string

func TestMain(m *testing.M) {
	if addr := os.Getenv(policyClientEnv); addr != "" {
		os.Exit(policyClient(addr))
	}
	dir, err := os.MkdirTemp("", "mock-authd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "mock-authd")
	goBin, err := exec.LookPath("go")
	if err == nil {
		cmd := exec.Command(goBin, "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		err = cmd.Run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building mock-authd:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type daemon struct {
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	exited chan struct{}
}

// startDaemon runs mock-authd; at the end of the test it is stopped with
// SIGTERM and must exit 0. Its log must never contain a token.
func startDaemon(t *testing.T, cred *syscall.Credential, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(binPath, args...), stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	d.cmd.Stderr = d.stderr
	if cred != nil {
		d.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting mock-authd: %v", err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
			t.Errorf("mock-authd did not exit within 5s of SIGTERM")
		}
		t.Logf("mock-authd log:\n%s", d.stderr.String())
		if strings.Contains(d.stderr.String(), secret) {
			t.Errorf("mock-authd logged a token")
		}
	})
	return d
}

func (d *daemon) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

const secret = "SECRET-"

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// follow runs the daemon's real client against the bus.
func follow(t *testing.T, addr string) *auth.DBus {
	t.Helper()
	src := auth.NewDBus(testLogger(t), auth.DBusOptions{
		Address: addr, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		RefreshMinInterval: 10 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return src
}

// waitFor reads updates until want arrives.
func waitFor(t *testing.T, src auth.Source, want auth.Credentials) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-src.Updates():
			if got == want {
				return
			}
			t.Logf("update %v while waiting for %v", got, want)
		case <-deadline:
			t.Fatalf("no update %v within 10s", want)
		}
	}
}

func nextUpdate(t *testing.T, src auth.Source) auth.Credentials {
	t.Helper()
	select {
	case c := <-src.Updates():
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no update within 10s")
		return auth.Credentials{}
	}
}

func control(t *testing.T, sock, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		out, err := mockauth.Control(ctx, sock, cmd)
		if err == nil {
			return out
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "control socket") {
			t.Fatalf("control %q: %v", strings.Fields(cmd)[0], err)
		}
		time.Sleep(20 * time.Millisecond) // daemon still starting
	}
}

func TestFixedModeSignalsAndControl(t *testing.T) {
	addr := dbustest.Start(t)
	sock := filepath.Join(dbustest.ShortTempDir(t), "ctl")
	url := "https://fixed.example"
	d := startDaemon(t, nil, "--bus-address", addr, "--token", secret+"1", "--server-url", url, "--control", sock)
	src := follow(t, addr)
	waitFor(t, src, auth.Credentials{Token: secret + "1", ServerURL: url})

	d.signal(t, syscall.SIGUSR1)
	rotated := nextUpdate(t, src)
	if !rotated.Authorized() || rotated.Token == secret+"1" || rotated.ServerURL != url {
		t.Fatalf("after SIGUSR1: %v, want a new token for %s", rotated, url)
	}

	d.signal(t, syscall.SIGUSR2)
	if got := nextUpdate(t, src); got != (auth.Credentials{}) {
		t.Fatalf("after SIGUSR2: %v, want empty", got)
	}

	// SIGHUP re-authenticates: the (rotated) token comes back.
	d.signal(t, syscall.SIGHUP)
	if got := nextUpdate(t, src); got != rotated {
		t.Fatalf("after SIGHUP: %v, want %v", got, rotated)
	}

	if got := control(t, sock, "set "+secret+"2 https://two.example"); got != "" {
		t.Fatalf("set answered %q", got)
	}
	want := auth.Credentials{Token: secret + "2", ServerURL: "https://two.example"}
	if got := nextUpdate(t, src); got != want {
		t.Fatalf("after set: %v, want %v", got, want)
	}
	if got := control(t, sock, "get"); got != "token="+want.Token+" url="+want.ServerURL {
		t.Fatalf("get answered %q", got)
	}
	if got := control(t, sock, "count fetch"); got != "0" {
		t.Fatalf("count fetch = %q, want 0", got)
	}
	src.Refresh()
	deadline := time.Now().Add(5 * time.Second)
	for control(t, sock, "count fetch") != "1" {
		if time.Now().After(deadline) {
			t.Fatal("Refresh did not reach mock-authd as FetchJwtToken")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := control(t, sock, "clear"); got != "" {
		t.Fatalf("clear answered %q", got)
	}
	if got := nextUpdate(t, src); got != (auth.Credentials{}) {
		t.Fatalf("after clear: %v, want empty", got)
	}
	if _, err := mockauth.Control(context.Background(), sock, "frobnicate"); err == nil {
		t.Fatal("unknown command accepted")
	}
}

func TestNameAlreadyOwned(t *testing.T) {
	addr := dbustest.Start(t)
	startDaemon(t, nil, "--bus-address", addr, "--token", secret+"1", "--server-url", "u")
	src := follow(t, addr)
	waitFor(t, src, auth.Credentials{Token: secret + "1", ServerURL: "u"})

	out, err := exec.Command(binPath, "--bus-address", addr, "--token", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already owned") {
		t.Fatalf("second mock-authd: err %v, output %q; want failure 'already owned'", err, out)
	}
}

// authServer implements the device auth_requests contract and checks each
// request independently of mockauth's own signing code.
type authServer struct {
	t        *testing.T
	mu       sync.Mutex
	requests int
	reject   int // answer 401 to this many requests first
}

func (s *authServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/api/devices/v1/authentication/auth_requests" {
		s.t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		s.t.Errorf("Content-Type %q", ct)
	}
	body, _ := io.ReadAll(r.Body)
	var req struct {
		IDData string `json:"id_data"`
		PubKey string `json:"pubkey"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		s.t.Errorf("body is not the expected JSON: %v: %s", err, body)
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if req.IDData != `{"mac":"02:00:00:00:00:01"}` {
		s.t.Errorf("id_data %q", req.IDData)
	}
	block, _ := pem.Decode([]byte(req.PubKey))
	if block == nil || block.Type != "PUBLIC KEY" {
		s.t.Errorf("pubkey is not a PEM public key: %q", req.PubKey)
		http.Error(w, "bad key", http.StatusBadRequest)
		return
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	edPub, ok := pub.(ed25519.PublicKey)
	if err != nil || !ok {
		s.t.Errorf("pubkey: %v (%T)", err, pub)
		http.Error(w, "bad key", http.StatusBadRequest)
		return
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get("X-MEN-Signature"))
	if err != nil || !ed25519.Verify(edPub, body, sig) {
		s.t.Errorf("X-MEN-Signature does not verify (%v)", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.requests <= s.reject {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	fmt.Fprintf(w, "%sjwt-%d", secret, s.requests)
}

func TestServerMode(t *testing.T) {
	srv := httptest.NewServer(&authServer{t: t, reject: 1})
	defer srv.Close()
	addr := dbustest.Start(t)
	d := startDaemon(t, nil, "--bus-address", addr, "--server", srv.URL, "--mac", "02:00:00:00:00:01",
		"--retry-min", "20ms", "--retry-max", "50ms")
	src := follow(t, addr)
	// The first request is not accepted (401); the retry is.
	waitFor(t, src, auth.Credentials{Token: secret + "jwt-2", ServerURL: srv.URL})

	d.signal(t, syscall.SIGUSR1)
	waitFor(t, src, auth.Credentials{Token: secret + "jwt-3", ServerURL: srv.URL})
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--token", "a", "--server", "http://127.0.0.1:1"},
		{"--log-level", "loud"},
		{"extra"},
		{"--bus-address", "unix:path=/nonexistent/bus"},
	} {
		if out, err := exec.Command(binPath, args...).CombinedOutput(); err == nil {
			t.Errorf("mock-authd %q succeeded: %s", args, out)
		}
	}
}
