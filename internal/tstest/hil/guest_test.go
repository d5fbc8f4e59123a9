//go:build hil

package hiltests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// guestSpec is build/hil/ARCH/FLAVOUR/guest.json, written by qemu/build-*.sh.
type guestSpec struct {
	Arch          string   `json:"arch"`
	Flavour       string   `json:"flavour"`
	Uname         string   `json:"uname"`
	QEMU          string   `json:"qemu"`
	Args          []string `json:"args"`
	Kernel        string   `json:"kernel"`
	Initrd        string   `json:"initrd"`
	Append        string   `json:"append"`
	KernelVersion string   `json:"kernel_version"`
}

func loadSpec(t *testing.T, buildDir, arch, flavour string) guestSpec {
	t.Helper()
	path := filepath.Join(buildDir, arch, flavour, "guest.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no %s guest image for %s (%v): build it with `make hil-images HIL_ARCHES=%s` (or run `make hil`)",
			flavour, arch, err, arch)
	}
	var s guestSpec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, f := range []string{s.Kernel, s.Initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s names a missing file: %v; rebuild with `make hil-images HIL_ARCHES=%s`", path, err, arch)
		}
	}
	return s
}

// serialLog keeps what the guest prints on its console, in memory and in a
// file under build/hil/logs.
type serialLog struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	file *os.File
}

func (l *serialLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.file != nil {
		_, _ = l.file.Write(p)
	}
	return len(p), nil
}

func (l *serialLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// ansi matches the colour sequences systemd prints on the console.
var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// tail returns the last max bytes of the log, cleaned of colour codes.
func (l *serialLog) tail(max int) string {
	s := ansi.ReplaceAllString(l.String(), "")
	if len(s) > max {
		s = "[... " + fmt.Sprint(len(s)-max) + " bytes cut ...]\n" + s[len(s)-max:]
	}
	return s
}

// guest is one running QEMU.
type guest struct {
	spec        guestSpec
	cmd         *exec.Cmd
	serial      *serialLog
	logPath     string
	started     time.Time
	exited      chan struct{}
	metricsPort int
}

// freePort asks the kernel for an unused loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// bootGuest starts QEMU with the mock server at serverPort reachable from
// the guest as 10.0.2.2:serverPort (QEMU user networking maps the host's
// loopback there) and the guest's port 9100 forwarded to a free port on the
// host's loopback. The guest is killed when the test ends; if the test
// failed, its serial log is attached.
func bootGuest(t *testing.T, spec guestSpec, logDir string, serverPort int, mac string) *guest {
	t.Helper()
	g := &guest{spec: spec, serial: &serialLog{}, exited: make(chan struct{}), metricsPort: freePort(t)}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	g.logPath = filepath.Join(logDir, spec.Arch+"-"+spec.Flavour+".log")
	f, err := os.Create(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	g.serial.file = f

	appendLine := fmt.Sprintf("%s systemd.log_color=0 hil.server=http://10.0.2.2:%d hil.mac=%s", spec.Append, serverPort, mac)
	args := append([]string{}, spec.Args...)
	args = append(args,
		"-kernel", spec.Kernel, "-initrd", spec.Initrd, "-append", appendLine,
		// The guest has no default route: 10.0.2.2 (the host's
		// loopback) is the only address it can reach.
		"-netdev", fmt.Sprintf("user,id=net0,hostfwd=tcp:127.0.0.1:%d-:9100", g.metricsPort),
		"-device", "virtio-net-pci,netdev=net0,mac="+mac,
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
	)
	g.cmd = exec.Command(spec.QEMU, args...)
	g.cmd.Stdout, g.cmd.Stderr = g.serial, g.serial
	// Its own process group, so that nothing QEMU might spawn outlives it,
	// and killed with the test binary should that die without cleaning up
	// (a -timeout panic).
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(g.serial, "hil-host: %s %s\n", spec.QEMU, strings.Join(args, " "))
	g.started = time.Now()
	if err := g.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v (is it installed? qemu/setup-host.sh installs it)", spec.QEMU, err)
	}
	go func() {
		_ = g.cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() {
		g.kill()
		f.Close()
		if t.Failed() {
			t.Logf("serial log of the %s %s guest (%s):\n%s", spec.Arch, spec.Flavour, g.logPath, g.serial.tail(96<<10))
		}
	})
	return g
}

// kill ends QEMU: SIGTERM, then SIGKILL to its process group.
func (g *guest) kill() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.exited
	}
}

// errGuestDied wraps a wait that ended because QEMU exited.
var errGuestDied = errors.New("guest died")

// watch returns a context that is cancelled when QEMU exits, so that waits
// on the server end at once instead of running into their timeouts.
func (g *guest) watch(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-g.exited:
			cancel(fmt.Errorf("%w: QEMU exited: %v", errGuestDied, g.cmd.ProcessState))
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}
