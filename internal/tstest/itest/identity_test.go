package itest

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/dbustest"
	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// newestWinsRelay is deviceconnect's one-connection-per-device rule in
// front of the mock server, for a single device: each new connection
// closes the previous one at once, both sides, so the daemon it belonged
// to sees its socket end without a close frame (1006), as the real server
// does (PROTOCOL.md 2.9.1). The mock's own rule sends a close frame, which
// a daemon rightly takes as the server saying why.
type newestWinsRelay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu   sync.Mutex
	prev []net.Conn // the latest relayed pair
	all  map[net.Conn]struct{}
}

func newNewestWinsRelay(t *testing.T, target string) *newestWinsRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &newestWinsRelay{ln: ln, target: target, all: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept(t)
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for c := range r.all {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *newestWinsRelay) url() string { return "http://" + r.ln.Addr().String() }

func (r *newestWinsRelay) accept(t *testing.T) {
	defer r.wg.Done()
	for {
		dev, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		for _, c := range r.prev {
			c.Close()
		}
		r.mu.Unlock()
		srv, err := net.Dial("tcp", r.target)
		if err != nil {
			t.Errorf("relay dial %s: %v", r.target, err)
			dev.Close()
			continue
		}
		r.mu.Lock()
		r.prev = []net.Conn{dev, srv}
		r.all[dev], r.all[srv] = struct{}{}, struct{}{}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pump(dev, srv)
		go r.pump(srv, dev)
	}
}

func (r *newestWinsRelay) pump(dst, src net.Conn) {
	defer r.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	r.mu.Lock()
	delete(r.all, dst)
	delete(r.all, src)
	r.mu.Unlock()
}

// notifySocket collects the STATUS= lines a daemon sends to its
// NOTIFY_SOCKET.
type notifySocket struct {
	path string
	mu   sync.Mutex
	last string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(dbustest.ShortTempDir(t), "notify")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				if s, ok := strings.CutPrefix(line, "STATUS="); ok {
					n.mu.Lock()
					n.last = s
					n.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

func (n *notifySocket) status() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last
}

// twin starts a second daemon with the same identity, configuration, bus
// and auth service as e, with its own log, metrics address and
// environment.
func (e *env) twin(daemonEnv ...string) *env {
	e.t.Helper()
	e2 := *e
	e2.log = &syncbuf.Buffer{}
	e2.extraEnv = daemonEnv
	e2.cfg = map[string]interface{}{}
	for k, v := range e.cfg {
		e2.cfg[k] = v
	}
	e2.cfg["Metrics"] = map[string]interface{}{"Listen": freeAddr(e.t)}
	e2.startDaemon()
	return &e2
}

const conflictLine = "another agent with this device's identity is probably connected (mender-connect still enabled?)"

// Two daemons with one identity against a server where the newest
// connection wins (issue 26, rule 2). Without a rule they push each other
// out every backoff (here at most 500 ms) for ever. Settled means: within
// 60 s of the second daemon's start, the server sees no new device
// connection for 20 s while one is up, so one daemon holds the link and
// the other stays away. The one that stays away says why, once, in its
// log, its status line and its metrics; the holder's status is clean.
func TestIdentityConflictSettles(t *testing.T) {
	t.Parallel()
	var relay *newestWinsRelay
	notifyA, notifyB := newNotifySocket(t), newNotifySocket(t)
	a := newEnvWith(t, nil, func(e *env) {
		relay = newNewestWinsRelay(t, e.addr)
		e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), relay.url())
	}, "NOTIFY_SOCKET="+notifyA.path)
	a.waitDevice()
	b := a.twin("NOTIFY_SOCKET=" + notifyB.path)
	start := time.Now()

	const quiet = 20 * time.Second
	connects, since := a.srv.DeviceConnects(a.deviceID), time.Now()
	for {
		time.Sleep(100 * time.Millisecond)
		if n := a.srv.DeviceConnects(a.deviceID); n != connects {
			connects, since = n, time.Now()
			continue
		}
		if time.Since(since) >= quiet && a.metric("tether_link_up")+b.metric("tether_link_up") == 1 {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("no settling within 60 s: %d device connections, the last %v ago\nA:\n%s\nB:\n%s",
				connects, time.Since(since).Round(time.Millisecond), a.log.String(), b.log.String())
		}
	}
	t.Logf("settled after %v (%d device connections)", time.Since(start).Round(time.Second), connects)

	holder, waiter, waiterNotify := a, b, notifyB
	if b.metric("tether_link_up") == 1 {
		holder, waiter, waiterNotify = b, a, notifyA
	}
	if got := waiter.metric("tether_link_identity_conflict"); got != 1 {
		t.Errorf("waiting daemon: tether_link_identity_conflict = %v, want 1", got)
	}
	if got := waiter.metric("tether_link_identity_conflict_closes_total"); got < 3 {
		t.Errorf("waiting daemon: tether_link_identity_conflict_closes_total = %v, want ≥ 3", got)
	}
	if n := strings.Count(waiter.log.String(), conflictLine); n != 1 {
		t.Errorf("waiting daemon logged the conflict %d times, want once:\n%s", n, waiter.log.String())
	}
	if s := waiterNotify.status(); !strings.Contains(s, conflictLine) {
		t.Errorf("waiting daemon's status %q does not name the conflict", s)
	}
	// The holder may have been in an episode too, early in the fight; a
	// link up for 20 s ends it, with one line.
	eventually(t, 5*time.Second, "the holder's conflict gauge at 0", func() bool {
		return holder.metric("tether_link_identity_conflict") == 0
	})
	if strings.Contains(holder.log.String(), conflictLine) {
		if n := strings.Count(holder.log.String(), "identity conflict is over"); n != 1 {
			t.Errorf("holder logged the end of its episode %d times, want once:\n%s", n, holder.log.String())
		}
	}
	holderNotify := notifyA
	if holder == b {
		holderNotify = notifyB
	}
	eventually(t, 5*time.Second, "the holder's clean status line", func() bool {
		s := holderNotify.status()
		return strings.HasPrefix(s, "link connected") && !strings.Contains(s, "identity")
	})
}
