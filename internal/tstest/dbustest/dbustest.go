// Package dbustest runs a private dbus-daemon for tests, so that code which
// talks to the system bus can be exercised against a real message bus
// without touching the machine's own buses.
package dbustest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// OpenPolicy lets every user connect, own any name, send and receive
// anything: tests may run as root in CI and as a normal user locally.
const OpenPolicy = `
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
`

// SystemPolicy mimics the default-deny policy of a distribution's
// system.conf: anyone may connect and talk to the bus driver, but owning
// names and sending method calls must be allowed by a service's own policy
// file (for example one included with <include>).
const SystemPolicy = `
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
`

// startTimeout bounds how long a dbus-daemon may take to print its address.
const startTimeout = 10 * time.Second

// Options configure a private bus.
type Options struct {
	// SocketPath is where the bus listens. Empty means a fresh path in a
	// short-named temporary directory (unix socket paths are limited to
	// 108 bytes, and t.TempDir paths of long test names can exceed that).
	// Give a fixed path to start a bus later, or again, at a known address.
	SocketPath string
	// Config is the body of <busconfig> apart from <listen> and <auth>,
	// normally one or more <policy> elements. Empty means OpenPolicy.
	Config string
}

// Bus is a running private dbus-daemon.
type Bus struct {
	// Address is the D-Bus address clients connect to.
	Address string
	// SocketPath is the unix socket the bus listens on.
	SocketPath string

	t        testing.TB
	cmd      *exec.Cmd
	stopOnce sync.Once
	stopped  chan struct{}
	drained  chan struct{}
	stderr   *syncbuf.Buffer
}

// Start starts a private dbus-daemon with an open policy and returns its
// address. The daemon is killed when the test ends.
func Start(t testing.TB) string {
	t.Helper()
	return StartBus(t, Options{}).Address
}

// StartWithConfig starts a private dbus-daemon whose configuration body
// (everything inside <busconfig> except <listen> and <auth>) is config, and
// returns its address. Use it for policy tests, e.g. with SystemPolicy plus
// an <include> of a service's policy file.
func StartWithConfig(t testing.TB, config string) string {
	t.Helper()
	return StartBus(t, Options{Config: config}).Address
}

// SocketAddress returns the D-Bus address of a unix socket path.
func SocketAddress(path string) string {
	return "unix:path=" + path
}

// ShortTempDir returns a new temporary directory with a short path, removed
// when the test ends; use it for unix sockets.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dbt")
	if err != nil {
		t.Fatalf("dbustest: creating socket directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// StartBus starts a private dbus-daemon as configured by opts. It is
// stopped when the test ends, or earlier with Stop.
func StartBus(t testing.TB, opts Options) *Bus {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatalf("dbus-daemon not found: apt-get install dbus (%v)", err)
	}
	sock := opts.SocketPath
	if sock == "" {
		sock = filepath.Join(ShortTempDir(t), "bus")
	}
	body := opts.Config
	if body == "" {
		body = OpenPolicy
	}
	conf := fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>%s</listen>
  <auth>EXTERNAL</auth>
%s
</busconfig>
`, SocketAddress(xmlEscape(sock)), body)
	confPath := filepath.Join(t.TempDir(), "bus.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("dbustest: writing config: %v", err)
	}

	cmd := exec.Command(bin, "--config-file="+confPath, "--nofork", "--nopidfile", "--print-address=1")
	// An os.Pipe rather than cmd.StdoutPipe: the reader below may outlive
	// cmd.Wait, which would close a StdoutPipe under its feet.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatalf("dbustest: stdout pipe: %v", err)
	}
	stderr := &syncbuf.Buffer{Max: 64 << 10} // bounded: a misbehaving daemon must not eat memory
	cmd.Stdout = stdoutW
	cmd.Stderr = stderr
	err = cmd.Start()
	_ = stdoutW.Close()
	if err != nil {
		_ = stdout.Close()
		t.Fatalf("dbustest: starting %s: %v", bin, err)
	}
	b := &Bus{SocketPath: sock, t: t, cmd: cmd, stopped: make(chan struct{}), drained: make(chan struct{}), stderr: stderr}

	addrCh := make(chan string, 1)
	go func() {
		defer close(b.drained)
		// Only the first line matters; afterwards drain so the daemon never
		// blocks on a full pipe.
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		addrCh <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, r)
		_ = stdout.Close()
	}()
	go func() {
		_ = cmd.Wait()
		close(b.stopped)
	}()
	t.Cleanup(b.Stop)

	select {
	case addr := <-addrCh:
		if addr == "" {
			b.Stop()
			t.Fatalf("dbustest: dbus-daemon printed no address; stderr: %s", stderr.String())
		}
		b.Address = addr
	case <-b.stopped:
		t.Fatalf("dbustest: dbus-daemon exited early (%v); stderr: %s", cmd.ProcessState, stderr.String())
	case <-time.After(startTimeout):
		b.Stop()
		t.Fatalf("dbustest: dbus-daemon printed no address within %v; stderr: %s", startTimeout, stderr.String())
	}
	return b
}

// Stop kills the daemon and waits until it is reaped. Clients see their
// connection drop. It is safe to call more than once.
func (b *Bus) Stop() {
	b.stopOnce.Do(func() {
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.stopped
		<-b.drained
		// A killed daemon leaves its socket file behind; remove it so a
		// client sees "no such file" as with a bus that never started.
		if err := os.Remove(b.SocketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.t.Logf("dbustest: removing %s: %v", b.SocketPath, err)
		}
	})
}

// Stderr returns what the daemon wrote to stderr so far (for diagnostics).
func (b *Bus) Stderr() string { return b.stderr.String() }

func xmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")
	return r.Replace(s)
}
