// Package itest runs the real tether binary against a real private
// dbus-daemon, the simulated auth service and the mock Mender server, and
// drives terminals over real websockets and ptys.
package itest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/mockauth"
	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/tstest/dbustest"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// tetherBin is built with -race; binDir holds it and any other build.
var tetherBin, binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-itest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	tetherBin = filepath.Join(dir, "tether")
	cmd := exec.Command("go", "build", "-race", "-o", tetherBin, "github.com/tether-agent/tether/cmd/tether")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tether:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var signingKey = []byte("itest-signing-key-0123456789abcdef")

const (
	adminEmail = "admin@tether.local"
	adminPass  = "tether"
)

var users = map[string]string{adminEmail: adminPass, "alice@tether.local": "alice", "bob@tether.local": "bob", "carol@tether.local": "carol"}

// env is one device under test with everything around it.
type env struct {
	t        *testing.T
	ctx      context.Context
	bus      string
	srv      *mockserver.Server
	url      string
	addr     string
	auth     *mockauth.Service
	deviceID string
	cfg      map[string]interface{}
	cfgPath  string
	daemon   *exec.Cmd
	exited   chan struct{}
	log      *syncbuf.Buffer
	jwts     map[string]string
	extraEnv []string // for the daemon, e.g. NOTIFY_SOCKET

	// Set by a prepare function of newEnvWith:
	bin   string     // the daemon binary; "" = tetherBin
	wrap  []string   // command line the daemon is started through (it must exec the binary in $0)
	files []*os.File // descriptors the daemon inherits from 3 up
	flags []string   // extra command-line flags, e.g. --trace

	// lenient runs the mock server in its Lenient mode (set by
	// newLenientEnv) instead of the real server's rules.
	lenient bool
}

// shellUser is nobody when the tests run as root (CI), so the shells'
// identity switch is exercised for real.
func shellUser(t *testing.T) string {
	if os.Geteuid() == 0 {
		return "nobody"
	}
	u := os.Getenv("USER")
	if u == "" {
		t.Fatal("USER is not set")
	}
	return u
}

// newEnv starts bus, server, auth service and daemon. overrides are merged
// into the config file (nested maps replace whole sections).
func newEnv(t *testing.T, overrides map[string]interface{}, daemonEnv ...string) *env {
	t.Helper()
	return newEnvWith(t, overrides, nil, daemonEnv...)
}

// newEnvBin is newEnv with another tether binary.
func newEnvBin(t *testing.T, bin string, overrides map[string]interface{}, daemonEnv ...string) *env {
	t.Helper()
	return newEnvWith(t, overrides, func(e *env) { e.bin = bin }, daemonEnv...)
}

// newEnvWith is newEnv with prepare called just before the daemon starts.
func newEnvWith(t *testing.T, overrides map[string]interface{}, prepare func(*env), daemonEnv ...string) *env {
	t.Helper()
	return newEnvMode(t, false, overrides, prepare, daemonEnv...)
}

// newLenientEnv is newEnvWith against a Lenient mock server, for tests of
// what tether does when a server is more forgiving than the real one
// (user sessions that outlive a link drop, "user disconnected" stops).
func newLenientEnv(t *testing.T, overrides map[string]interface{}, prepare func(*env), daemonEnv ...string) *env {
	t.Helper()
	return newEnvMode(t, true, overrides, prepare, daemonEnv...)
}

func newEnvMode(t *testing.T, lenient bool, overrides map[string]interface{}, prepare func(*env), daemonEnv ...string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, jwts: map[string]string{}, log: &syncbuf.Buffer{}, extraEnv: daemonEnv, lenient: lenient}
	e.bus = dbustest.Start(t)
	e.startServer("127.0.0.1:0")
	e.deviceID = "0f0e0d0c-0b0a-4908-8706-050403020100"

	conn, err := dbus.Connect(e.bus)
	if err != nil {
		t.Fatalf("connect to test bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	e.auth, err = mockauth.New(slog.New(slog.NewTextHandler(io.Discard, nil)), conn,
		mockauth.Options{Token: e.srv.IssueDeviceToken(e.deviceID), ServerURL: e.url})
	if err != nil {
		t.Fatalf("start simulated auth service: %v", err)
	}
	t.Cleanup(func() { e.auth.Close() })

	e.cfg = map[string]interface{}{
		"User":           shellUser(t),
		"ShellCommand":   "/bin/sh",
		"ShellArguments": []string{"-l"},
		"Auth":           map[string]interface{}{"DBusAddress": e.bus},
		"Reconnect":      map[string]interface{}{"BackoffBase": "50ms", "BackoffMax": "500ms", "StartJitter": "0s"}, // one daemon, no fleet to spread
		"Sessions":       map[string]interface{}{"StopGrace": "200ms"},
		"Metrics":        map[string]interface{}{"Listen": freeAddr(t)},
		"Log":            map[string]interface{}{"Journal": "off"}, // the test reads the log
	}
	for k, v := range overrides {
		e.cfg[k] = v
	}
	if prepare != nil {
		prepare(e)
	}
	e.startDaemon()
	return e
}

func (e *env) startServer(addr string) {
	e.t.Helper()
	e.srv = mockserver.New(mockserver.Options{SigningKey: signingKey, Users: users, Lenient: e.lenient,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	url, err := e.srv.Start(addr)
	if err != nil {
		e.t.Fatalf("start mock server on %s: %v", addr, err)
	}
	e.url = url
	e.addr = strings.TrimPrefix(url, "http://")
	srv := e.srv
	e.t.Cleanup(func() { srv.Close() })
}

func (e *env) startDaemon() {
	t := e.t
	t.Helper()
	b, err := json.MarshalIndent(e.cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	e.cfgPath = filepath.Join(t.TempDir(), "tether.conf")
	if err := os.WriteFile(e.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := e.bin
	if bin == "" {
		bin = tetherBin
	}
	args := append(append(append([]string(nil), e.wrap...), bin), "--config", e.cfgPath, "--fallback-config", filepath.Join(t.TempDir(), "none.conf"), "--debug")
	args = append(append(args, e.flags...), "daemon")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.ExtraFiles = e.files
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, e.extraEnv...)
	if !hasEnv(e.extraEnv, "RUNTIME_DIRECTORY") {
		// Not the host's /run/tether.
		cmd.Env = append(cmd.Env, "RUNTIME_DIRECTORY="+t.TempDir())
	}
	if !hasEnv(e.extraEnv, "TETHERTEST_LOGIN_RECORDS_DIR") {
		// Not the host's utmp and wtmp: an empty directory, no records.
		cmd.Env = append(cmd.Env, "TETHERTEST_LOGIN_RECORDS_DIR="+t.TempDir())
	}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.daemon = cmd
	e.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		e.stopDaemon()
		if t.Failed() {
			t.Logf("daemon log:\n%s", e.log.String())
		}
	})
}

// stopDaemon sends SIGTERM and returns how long the exit took.
func (e *env) stopDaemon() time.Duration {
	select {
	case <-e.exited:
		return 0
	default:
	}
	start := time.Now()
	_ = e.daemon.Process.Signal(syscall.SIGTERM)
	// A shutdown takes at most two graces, shell.KillWait and a second
	// (the daemon's own deadline), plus the race runtime's 1 s sleep at
	// exit; 10 s is past that for the harness's 200 ms grace even on a
	// loaded machine (a stop without shells took 1.2-1.8 s there).
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		// SIGQUIT: the Go runtime prints every goroutine's stack into
		// the daemon's log, which says where the shutdown hangs.
		took := time.Since(start)
		_ = e.daemon.Process.Signal(syscall.SIGQUIT)
		select {
		case <-e.exited:
		case <-time.After(5 * time.Second):
			_ = e.daemon.Process.Kill()
			<-e.exited
		}
		e.t.Errorf("daemon did not exit within %v of SIGTERM (goroutine dump in the daemon log)", took.Round(time.Millisecond))
	}
	return time.Since(start)
}

func (e *env) waitDevice() *mockserver.Device {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	d, err := e.srv.WaitDevice(ctx, e.deviceID)
	if err != nil {
		e.t.Fatalf("device did not connect: %v\n%s", err, e.log.String())
	}
	return d
}

func (e *env) jwt(email string) string {
	e.t.Helper()
	if j, ok := e.jwts[email]; ok {
		return j
	}
	j, err := mockserver.Login(e.ctx, e.url, email, users[email])
	if err != nil {
		e.t.Fatalf("login %s: %v", email, err)
	}
	e.jwts[email] = j
	return j
}

// open opens a terminal for email and fails the test if it cannot.
func (e *env) open(email string, opts ...mockserver.TerminalOption) *mockserver.Terminal {
	e.t.Helper()
	term, err := e.tryOpen(email, opts...)
	if err != nil {
		e.t.Fatalf("open terminal for %s: %v", email, err)
	}
	return term
}

func (e *env) tryOpen(email string, opts ...mockserver.TerminalOption) (*mockserver.Terminal, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	term, err := mockserver.OpenTerminal(ctx, e.url, e.jwt(email), e.deviceID, 80, 24, opts...)
	if err == nil {
		e.t.Cleanup(func() { term.Close() })
	}
	return term, err
}

func (e *env) expect(term *mockserver.Terminal, substr string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	out, err := term.Expect(ctx, substr)
	if err != nil {
		e.t.Fatalf("waiting for %q: %v; output so far %q", substr, err, out)
	}
	return out
}

// run types a command and waits for a marker the command prints (built so
// the marker is not in the echoed input).
func (e *env) run(term *mockserver.Terminal, cmd string) string {
	e.t.Helper()
	marker := fmt.Sprintf("__done_%d__", time.Now().UnixNano())
	half := len(marker) / 2
	fmt.Fprintf(term, "%s\nprintf '%%s%%s\\n' '%s' '%s'\n", cmd, marker[:half], marker[half:])
	out := e.expect(term, marker)
	return out
}

func (e *env) waitStop(term *mockserver.Terminal) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	m, err := term.WaitStop(ctx)
	if err != nil {
		e.t.Fatalf("waiting for stop: %v", err)
	}
	return string(m.Body)
}

// children lists the daemon's live child processes and zombies.
func (e *env) children() (live, zombies []int) {
	pid := e.daemon.Process.Pid
	// Each thread lists the children it forked.
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var all []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all = append(all, strings.Fields(string(b))...)
	}
	for _, f := range all {
		c, _ := strconv.Atoi(f)
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
			zombies = append(zombies, c)
		} else {
			live = append(live, c)
		}
	}
	return live, zombies
}

// freeAddr finds a free loopback port for the daemon's metrics endpoint.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metric scrapes the daemon and returns the value of the sample whose
// line starts with name (labels included, e.g. `tether_sessions_active{proto="shell"}`).
func (e *env) metric(name string) float64 {
	e.t.Helper()
	m, _ := e.cfg["Metrics"].(map[string]interface{})
	addr, _ := m["Listen"].(string)
	if addr == "" {
		e.t.Fatal("metrics are off in this env")
	}
	var body []byte
	for i := 0; ; i++ {
		// No keep-alive: an idle scrape connection would count as a
		// leaked fd and goroutine in the daemon.
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + addr + "/metrics")
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				break
			}
		}
		if i == 50 {
			e.t.Fatalf("scrape %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(line[len(name):]), 64)
			if err != nil {
				e.t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	// A renamed or vanished series must fail the test that reads it, not
	// read as 0 and switch its assertion off.
	e.t.Fatalf("metric %s not found in the scrape", name)
	return 0
}

// goroutines reads the daemon's goroutine count from its metrics.
func (e *env) goroutines() int {
	return int(e.metric("go_goroutines"))
}

func (e *env) fdCount() int {
	e.t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", e.daemon.Process.Pid))
	if err != nil {
		e.t.Fatalf("count the daemon's fds: %v", err)
	}
	return len(ents)
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}
