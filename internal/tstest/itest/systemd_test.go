package itest

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

type notification struct {
	at   time.Time
	text string
}

// TestSystemdNotify runs the daemon under a fake NOTIFY_SOCKET with a
// watchdog: READY comes without waiting for the server, STATUS tells the
// link state and sessions in words, WATCHDOG=1 comes at half the interval
// while the daemon is healthy and stops when it is stopped (SIGSTOP), and
// STOPPING comes on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(dbustest.ShortTempDir(t), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan notification, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line != "" {
					got <- notification{time.Now(), line}
				}
			}
		}
	}()
	const interval = 600 * time.Millisecond
	e := newEnv(t, nil, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=600000")
	wait := func(prefix string, timeout time.Duration) notification {
		t.Helper()
		deadline := time.After(timeout)
		for {
			select {
			case n := <-got:
				if strings.HasPrefix(n.text, prefix) {
					return n
				}
			case <-deadline:
				t.Fatalf("no %s within %v", prefix, timeout)
			}
		}
	}
	wait("READY=1", 10*time.Second)
	e.waitDevice()
	term := e.open(adminEmail)
	eventually(t, 10*time.Second, "a STATUS with the session", func() bool {
		select {
		case n := <-got:
			return strings.HasPrefix(n.text, "STATUS=") && strings.Contains(n.text, "link connected") && strings.Contains(n.text, "1 session")
		default:
			return false
		}
	})
	// Watchdog pings at about half the interval.
	first := wait("WATCHDOG=1", 5*time.Second)
	var pings []time.Time
	for len(pings) < 4 {
		pings = append(pings, wait("WATCHDOG=1", 5*time.Second).at)
	}
	if gap := pings[3].Sub(first.at) / 4; gap < interval/4 || gap > interval*3/4 {
		t.Fatalf("watchdog pings every %v, want about %v", gap, interval/2)
	}
	// A stopped daemon stops pinging.
	if err := e.daemon.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(interval / 2) // a ping may have been in flight
	for len(got) > 0 {
		<-got
	}
	select {
	case n := <-got:
		t.Fatalf("notification from a stopped daemon: %s", n.text)
	case <-time.After(2 * interval):
	}
	_ = e.daemon.Process.Signal(syscall.SIGCONT)
	wait("WATCHDOG=1", 5*time.Second)
	_ = term.Close()
	_ = e.daemon.Process.Signal(syscall.SIGTERM)
	wait("STOPPING=1", 5*time.Second)
}
