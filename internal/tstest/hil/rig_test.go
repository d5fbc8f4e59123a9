//go:build hil

package hiltests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// Accounts on the mock server; each user has its own per-user session
// count on the device. Sessions whose user connection the server dropped
// when the device reconnected stay on the device until their health check
// gives up (minutes), so the steps after a reconnect log in as users that
// have no such session.
const (
	admin    = mockserver.DefaultUser
	alice    = "alice@tether.local"
	rotation = "rotation@tether.local"
	restart  = "restart@tether.local"
	watchdog = "watchdog@tether.local"
)

// allArches are the guest architectures, by their Debian names.
const allArches = "arm64 armhf amd64"

// settings reads the environment: HIL_ARCHES (space or comma separated
// Debian architecture names; default defaultArches) and HIL_BUILD (the
// build directory of qemu/; default build/hil in the repository).
func settings(t *testing.T, defaultArches string) (buildDir string, arches []string) {
	t.Helper()
	buildDir = os.Getenv("HIL_BUILD")
	if buildDir == "" {
		buildDir = filepath.Join("..", "..", "..", "build", "hil")
	}
	buildDir, err := filepath.Abs(buildDir)
	if err != nil {
		t.Fatal(err)
	}
	list := strings.Fields(strings.ReplaceAll(os.Getenv("HIL_ARCHES"), ",", " "))
	if len(list) == 0 {
		return buildDir, strings.Fields(defaultArches)
	}
	for _, a := range list {
		if !slices.Contains(strings.Fields(allArches), a) {
			t.Fatalf("HIL_ARCHES: unknown architecture %q (known: %s)", a, allArches)
		}
	}
	return buildDir, list
}

// rigConfig is what a suite's rigs do differently from the defaults.
type rigConfig struct {
	// arches are the architectures when HIL_ARCHES is not set.
	arches string
	// sessionByteLimit is the mock server's limit on the output of one
	// user connection: 0 is the real server's 8 MiB, negative none.
	sessionByteLimit int64
}

// forEachArch runs suite as a subtest per architecture.
func forEachArch(t *testing.T, flavour string, timeout time.Duration, suite func(r *rig)) {
	forEachArchWith(t, flavour, timeout, rigConfig{arches: allArches}, suite)
}

func forEachArchWith(t *testing.T, flavour string, timeout time.Duration, cfg rigConfig, suite func(r *rig)) {
	buildDir, arches := settings(t, cfg.arches)
	for i, arch := range arches {
		t.Run(arch, func(t *testing.T) {
			spec := loadSpec(t, buildDir, arch, flavour)
			// A distinct identity per guest keeps logs apart.
			mac := fmt.Sprintf("52:54:00:4e:%02x:%02x", flavour[0], i+1)
			suite(newRig(t, spec, filepath.Join(buildDir, "logs"), mac, timeout, cfg))
		})
	}
}

// signingKey signs the mock server's JWTs; a restarted server uses it
// again, so the device's token stays valid.
const signingKey = "hil-signing-key-0123456789abcdef"

// users are the server's accounts, e-mail to password.
func users() map[string]string {
	return map[string]string{admin: mockserver.DefaultPassword, alice: "alice",
		rotation: "rotation", restart: "restart", watchdog: "watchdog"}
}

// rig is one guest with the mock server it talks to.
type rig struct {
	// t is the running step's test; root the guest's.
	t    *testing.T
	root *testing.T
	ctx  context.Context
	cfg  rigConfig
	spec guestSpec
	g    *guest
	srv  *mockserver.Server
	url  string
	addr string
	port int
	jwts map[string]string
	// dev is the device's current connection.
	dev *mockserver.Device
	// Measurements, reported at the end.
	bootToConnected time.Duration
	rss             string
	extra           []string
}

func newRig(t *testing.T, spec guestSpec, logDir, mac string, timeout time.Duration, cfg rigConfig) *rig {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	r := &rig{t: t, root: t, ctx: ctx, cfg: cfg, spec: spec, jwts: map[string]string{}}
	r.startServer("127.0.0.1:0")
	start := time.Now()
	r.g = bootGuest(t, spec, logDir, r.port, mac)
	t.Cleanup(func() {
		t.Logf("HIL-RESULT arch=%s flavour=%s boot_to_connected=%s rss=%s total=%s %s",
			spec.Arch, spec.Flavour, round(r.bootToConnected), r.rss, round(time.Since(start)), strings.Join(r.extra, " "))
	})
	return r
}

func round(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(100 * time.Millisecond).String()
}

func (r *rig) startServer(addr string) {
	r.t.Helper()
	srv := mockserver.New(mockserver.Options{SigningKey: []byte(signingKey), Users: users(),
		SessionByteLimit: r.cfg.sessionByteLimit, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	url, err := srv.Start(addr)
	if err != nil {
		r.t.Fatalf("start mock server on %s: %v", addr, err)
	}
	r.srv, r.url = srv, url
	r.addr = strings.TrimPrefix(url, "http://")
	_, port, _ := strings.Cut(r.addr, ":")
	r.port, _ = strconv.Atoi(port)
	r.root.Cleanup(func() { srv.Close() })
}

// restartServer closes the mock server and starts a new one on the same
// port with the same signing key, like a server restart: issued tokens
// stay valid.
func (r *rig) restartServer() {
	r.t.Helper()
	if err := r.srv.Close(); err != nil {
		r.t.Fatalf("closing the mock server: %v", err)
	}
	r.startServer(r.addr)
}

// waitConnected waits for the device's first connection.
func (r *rig) waitConnected(timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	ctx, stop := r.g.watch(ctx)
	defer stop()
	d, err := r.srv.WaitDevice(ctx, "")
	if err != nil {
		r.t.Fatalf("device did not connect within %v of boot: %v", timeout, context.Cause(ctx))
	}
	r.dev = d
	r.bootToConnected = time.Since(r.g.started)
	r.t.Logf("%s %s: connected %v after QEMU started", r.spec.Arch, r.spec.Flavour, round(r.bootToConnected))
}

// waitReconnect waits for the device's next connection after r.dev.
func (r *rig) waitReconnect(timeout time.Duration, why string) time.Duration {
	r.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	ctx, stop := r.g.watch(ctx)
	defer stop()
	d, err := r.srv.WaitReconnect(ctx, r.dev)
	if err != nil {
		r.t.Fatalf("device did not reconnect within %v after %s: %v", timeout, why, context.Cause(ctx))
	}
	r.dev = d
	return time.Since(start)
}

// waitDeviceOnNewServer waits for the device on a restarted server.
func (r *rig) waitDeviceOnNewServer(timeout time.Duration) time.Duration {
	r.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	ctx, stop := r.g.watch(ctx)
	defer stop()
	d, err := r.srv.WaitDevice(ctx, r.dev.ID())
	if err != nil {
		r.t.Fatalf("device did not come back within %v after the server restart: %v", timeout, context.Cause(ctx))
	}
	r.dev = d
	return time.Since(start)
}

func (r *rig) jwt(email string) string {
	r.t.Helper()
	if j, ok := r.jwts[email]; ok {
		return j
	}
	j, err := mockserver.Login(r.ctx, r.url, email, users()[email])
	if err != nil {
		r.t.Fatalf("login %s: %v", email, err)
	}
	r.jwts[email] = j
	return j
}

// tryOpen opens a terminal on the device for email; it is closed when the
// current step ends.
func (r *rig) tryOpen(email string) (*mockserver.Terminal, error) {
	return r.tryOpenFor(r.t, email)
}

func (r *rig) tryOpenFor(owner *testing.T, email string) (*mockserver.Terminal, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 60*time.Second)
	defer cancel()
	term, err := mockserver.OpenTerminal(ctx, r.url, r.jwt(email), r.dev.ID(), 80, 24)
	if err == nil {
		owner.Cleanup(func() { term.Close() })
	}
	return term, err
}

// open opens a terminal for email and waits for the shell to answer. A
// session of the same user that an earlier step closed may still be
// ending on the device; open waits for its slot.
func (r *rig) open(email string) *mockserver.Terminal {
	r.t.Helper()
	return r.openFor(r.t, email)
}

// openLasting opens a terminal that later steps use too: it is closed
// when the guest's test ends.
func (r *rig) openLasting(email string) *mockserver.Terminal {
	r.t.Helper()
	return r.openFor(r.root, email)
}

func (r *rig) openFor(owner *testing.T, email string) *mockserver.Terminal {
	r.t.Helper()
	var term *mockserver.Terminal
	r.eventually(30*time.Second, time.Second, "opening a terminal for "+email, func() error {
		var err error
		term, err = r.tryOpenFor(owner, email)
		if msg, refused := shellError(err); refused && msg == "user has too many open sessions" {
			return err
		}
		if err != nil {
			r.t.Fatalf("open a terminal for %s: %v", email, err)
		}
		return nil
	})
	// The first prompt: the shell is up and reading.
	r.run(term, "true")
	return term
}

// cmdTimeout bounds one shell command; emulated CPUs are slow.
const cmdTimeout = 60 * time.Second

// run types cmd into the shell and returns its output (what the terminal
// showed after the echoed command line, carriage returns removed). It
// waits for a marker that the command prints after cmd, built so that the
// echoed input does not contain it.
func (r *rig) run(term *mockserver.Terminal, cmd string) string {
	r.t.Helper()
	out, err := r.tryRun(term, cmd, cmdTimeout)
	if err != nil {
		r.t.Fatalf("running %q on the device: %v; output so far %q", cmd, err, out)
	}
	return out
}

func (r *rig) tryRun(term *mockserver.Terminal, cmd string, timeout time.Duration) (string, error) {
	marker := fmt.Sprintf("__hil_%d__", time.Now().UnixNano())
	half := len(marker) / 2
	begin := "__hil_begin__"
	fmt.Fprintf(term, "printf '%%s%%s\\n' '%s' '%s'; %s\nprintf '%%s%%s\\n' '%s' '%s'\n",
		begin[:5], begin[5:], cmd, marker[:half], marker[half:])
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	out, err := term.Expect(ctx, marker)
	out = strings.ReplaceAll(out, "\r", "")
	if err != nil {
		return out, err
	}
	// Keep what the command printed: from the begin mark (printed, not
	// echoed) to the echoed second printf line.
	if i := strings.LastIndex(out, begin+"\n"); i >= 0 {
		out = out[i+len(begin)+1:]
	}
	out = strings.TrimSuffix(out, marker)
	if i := strings.LastIndex(out, "printf '%s%s\\n'"); i >= 0 {
		out = out[:i]
	}
	if i := strings.LastIndex(out, "\n"); i >= 0 {
		out = out[:i+1]
	}
	return out, nil
}

// value runs cmd, which must print "key=value", and returns value.
func (r *rig) value(term *mockserver.Terminal, key, cmd string) string {
	r.t.Helper()
	return r.valueWithin(term, key, cmd, cmdTimeout)
}

// valueWithin is value for a command that may take longer than cmdTimeout.
func (r *rig) valueWithin(term *mockserver.Terminal, key, cmd string, timeout time.Duration) string {
	r.t.Helper()
	out, err := r.tryRun(term, cmd, timeout)
	if err != nil {
		r.t.Fatalf("running %q on the device: %v; output so far %q", cmd, err, out)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `=(.*)$`).FindStringSubmatch(out)
	if m == nil {
		r.t.Fatalf("%q printed no %s=...: %q", cmd, key, out)
	}
	return strings.TrimSpace(m[1])
}

func (r *rig) waitStop(term *mockserver.Terminal) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, cmdTimeout)
	defer cancel()
	m, err := term.WaitStop(ctx)
	if err != nil {
		r.t.Fatalf("waiting for the device to stop the shell: %v", err)
	}
	return string(m.Body)
}

// eventually polls cond every interval until it returns nil or the timeout
// passes, then fails with the last error.
func (r *rig) eventually(timeout, interval time.Duration, what string, cond func() error) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			r.t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(interval)
	}
}

// rssOf reads VmRSS of the daemon on the device.
func (r *rig) rssOf(term *mockserver.Terminal, pidCmd string) string {
	r.t.Helper()
	v := r.value(term, "rss", fmt.Sprintf(`echo "rss=$(awk '/^VmRSS/ {print $2 $3}' /proc/$(%s)/status)"`, pidCmd))
	if v == "" {
		r.t.Fatalf("could not read the daemon's VmRSS")
	}
	return v
}

// step is one named check of a guest suite.
type step struct {
	name string
	run  func()
}

// steps runs the checks in order as subtests and stops at the first
// failure: later steps need the device in the state earlier ones leave.
func (r *rig) steps(steps ...step) {
	for _, s := range steps {
		if !r.step(s.name, s.run) {
			return
		}
	}
}

func (r *rig) step(name string, f func()) bool {
	start := time.Now()
	ok := r.t.Run(name, func(t *testing.T) {
		outer := r.t
		r.t = t
		defer func() { r.t = outer }()
		f()
	})
	r.t.Logf("step %s: %v", name, round(time.Since(start)))
	return ok
}

func shellError(err error) (string, bool) {
	var se *mockserver.ShellError
	if errors.As(err, &se) {
		return se.Message, true
	}
	return "", false
}
