package itest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/wire"
)

// What a hostile server can do through port forwarding, and the bounds
// the daemon stays within.

// slowServer is a Mender server that accepts the device's websocket and
// then reads one frame from it every `every`: the link stays up while
// everything the device answers backs up inside the daemon.
type slowServer struct {
	url   string
	conns chan *websocket.Conn
}

func startSlowServer(t *testing.T, every time.Duration) *slowServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowServer{url: "http://" + l.Addr().String(), conns: make(chan *websocket.Conn, 4)}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []*websocket.Conn
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
		s.conns <- c
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				// Frames already buffered would still be read after a
				// Close: stop on done.
				select {
				case <-time.After(every):
				case <-done:
					return
				}
			}
		}()
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		close(done)
		_ = srv.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// pfFrame is a port-forward message with a connection_id.
func pfFrame(t *testing.T, typ, sid, connID string, body []byte) []byte {
	t.Helper()
	return frame(t, int(wire.ProtoPortForward), typ, sid, map[string]interface{}{wire.PropConnectionID: connID}, body)
}

func pfNewBody(t *testing.T, host string, port int) []byte {
	t.Helper()
	b, err := msgpack.Marshal(map[string]interface{}{"remote_host": host, "remote_port": uint16(port), "protocol": "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A server that floods port-forward messages with huge connection ids or
// hosts fills neither the journal nor, reading slowly, the memory: the
// ids are refused by length, the refusals echo nothing back and what is
// logged is clipped and rate-limited.
func TestPortForwardHostileIDsLog(t *testing.T) {
	const maxGrowth = 8 << 10
	const n = 30
	port := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	tests := []struct {
		name  string
		frame func(i int) []byte
	}{
		{"new with 500 KB ids and 400 KB hosts", func(i int) []byte {
			return pfFrame(t, "new", "3f0e0d0c-0b0a-4908-8706-050403020100", bigID(i, 500_000), pfNewBody(t, bigID(i, 400_000), port))
		}},
		{"new with ordinary ids and 400 KB hosts", func(i int) []byte {
			return pfFrame(t, "new", "3f0e0d0c-0b0a-4908-8706-050403020100", fmt.Sprintf("c-%d", i), pfNewBody(t, bigID(i, 400_000), port))
		}},
		{"forward to unknown 1 MB ids", func(i int) []byte {
			return pfFrame(t, "forward", "4f0e0d0c-0b0a-4908-8706-050403020100", bigID(i, 1_000_000), []byte("x"))
		}},
		{"new that fail to dial", func(i int) []byte {
			return pfFrame(t, "new", "5f0e0d0c-0b0a-4908-8706-050403020100", fmt.Sprintf("d-%d", i), pfNewBody(t, "127.0.0.1", freePort(t)))
		}},
	}
	e := newEnvWith(t, nil, func(e *env) { e.bin = plainTether(t) })
	d := e.waitDevice()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames, cancel := d.Subscribe()
			defer cancel()
			e.sync(d)
			before := len(e.log.String())
			t0 := time.Now()
			for i := 0; i < n; i++ {
				e.sendRaw(d, tt.frame(i))
			}
			e.sync(d)
			// Dials fail off the read loop: wait for their errors.
			errs, biggest := 0, 0
			timeout := time.After(20 * time.Second)
			for errs < n {
				select {
				case m, ok := <-frames:
					if !ok {
						t.Fatal("link ended")
					}
					if m.Header.Proto != wire.ProtoPortForward || m.Header.MsgType != "error" {
						continue
					}
					errs++
					size := len(m.Body) + len(m.Header.StringProp(wire.PropConnectionID))
					biggest = max(biggest, size)
				case <-timeout:
					t.Fatalf("%d of %d port-forward errors came back", errs, n)
				}
			}
			grown := len(e.log.String()) - before
			t.Logf("log grew by %d bytes in %v for %d frames; the largest error reply carried %d bytes", grown, time.Since(t0), n, biggest)
			if grown > maxGrowth {
				t.Errorf("log grew by %d bytes, want at most %d; the end of it:\n%s", grown, maxGrowth, tail(e.log.String(), 2000))
			}
			if biggest > 1024 {
				t.Errorf("an error reply carried %d bytes: the refusal echoes what it refuses", biggest)
			}
		})
	}
	e.run(e.open(adminEmail), "echo still-serving")
}

// Error replies to a server that does not read them wait inside the
// daemon; with 1 MB ids they must not add up to gigabytes.
func TestPortForwardHostileIDsMemory(t *testing.T) {
	const limitKB = 64 << 10
	const sessions, perSession = 4, 80
	slow := startSlowServer(t, 2*time.Second)
	e := newEnvWith(t, nil, func(e *env) {
		e.bin = plainTether(t)
		e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), slow.url)
	})
	var c *websocket.Conn
	select {
	case c = <-slow.conns:
	case <-time.After(15 * time.Second):
		t.Fatalf("the device did not connect to the slow server\n%s", e.log.String())
	}
	pid := e.daemon.Process.Pid
	time.Sleep(200 * time.Millisecond)
	before := procStatusKB(t, pid, "VmHWM")
	t0 := time.Now()
	for i := 0; i < perSession; i++ {
		for s := 0; s < sessions; s++ {
			sid := fmt.Sprintf("6f0e0d0c-0b0a-4908-8706-%012d", s)
			if err := c.WriteMessage(websocket.BinaryMessage, pfFrame(t, "forward", sid, bigID(i*sessions+s, 1_000_000), []byte("x"))); err != nil {
				t.Fatalf("frame %d of session %d: %v", i, s, err)
			}
		}
	}
	t.Logf("%d frames written in %v", sessions*perSession, time.Since(t0))
	// Refused for the id's length, or (before ids were bounded) answered
	// as unknown.
	eventually(t, 60*time.Second, "every forward handled", func() bool {
		return e.metricOr0(`tether_portforward_ignored_total{kind="too_long"}`)+
			e.metricOr0(`tether_portforward_ignored_total{kind="unknown_connection"}`) >= sessions*perSession
	})
	t.Logf("handled after %v", time.Since(t0))
	time.Sleep(500 * time.Millisecond)
	peak, rss := procStatusKB(t, pid, "VmHWM"), procStatusKB(t, pid, "VmRSS")
	t.Logf("daemon memory: high-water %d kB before, %d kB after %d forwards with 1 MB ids; resident %d kB", before, peak, sessions*perSession, rss)
	if peak > limitKB {
		t.Fatalf("daemon high-water mark %d kB, want under %d kB", peak, limitKB)
	}
}

// Upstream has no connection limit, and real tools open many connections
// through one forward (a browser on the device's web UI, parallel
// downloads): with the defaults, 50 and 128 connections of one session
// work at once, each carrying its own data.
func TestPortForwardParallelDefaults(t *testing.T) {
	e := newEnvWith(t, nil, func(e *env) { e.bin = plainTether(t) })
	e.waitDevice()
	port := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	for _, n := range []int{50, 128} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			_, addr := e.forward("127.0.0.1", port)
			rss0 := procStatusKB(t, e.daemon.Process.Pid, "VmRSS")
			conns := make([]net.Conn, n)
			for i := range conns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i, c := range conns {
				wg.Add(1)
				go func(i int, c net.Conn) {
					defer wg.Done()
					msg := bytes.Repeat([]byte(fmt.Sprintf("%03d", i)), 20000)
					go func() { _, _ = c.Write(msg) }()
					got := make([]byte, len(msg))
					_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
					if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
						errs <- fmt.Errorf("connection %d: %v", i, err)
					}
				}(i, c)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := e.metric(`tether_portforward_connections_active{proto="tcp"}`); got != float64(n) {
				t.Errorf("active connections %v, want %d", got, n)
			}
			t.Logf("%d connections open, 60 KB echoed on each: daemon RSS %d kB → %d kB", n, rss0, procStatusKB(t, e.daemon.Process.Pid, "VmRSS"))
			for _, c := range conns {
				c.Close()
			}
			eventually(t, 20*time.Second, "every connection closed", func() bool {
				return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 0
			})
		})
	}
	if got := e.metric(`tether_portforward_denied_total{reason="session_limit"}`); got != 0 {
		t.Fatalf("%v connections refused by the session limit", got)
	}
}

// A forwarded connection's socket is the configured account's (nobody
// when the tests run as root), as the kernel reports it: owner-matching
// firewall rules must not see a remote user's connections as root's.
func TestPortForwardSocketOwner(t *testing.T) {
	want := os.Getuid()
	if os.Geteuid() == 0 {
		u, err := user.Lookup(shellUser(t))
		if err != nil {
			t.Fatal(err)
		}
		want, _ = strconv.Atoi(u.Uid)
	}
	peers := make(chan *net.TCPAddr, 4)
	port := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		peers <- c.RemoteAddr().(*net.TCPAddr)
		echo(c)
	})
	e := newEnv(t, nil)
	e.waitDevice()
	_, addr := e.forward("127.0.0.1", port)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var peer *net.TCPAddr
	select {
	case peer = <-peers:
	case <-time.After(15 * time.Second):
		t.Fatal("the device did not connect to the destination")
	}
	uid := procNetUID(t, "tcp", peer)
	if uid != want {
		t.Fatalf("the daemon's socket %v to the destination belongs to uid %d, want %d (%s)", peer, uid, want, shellUser(t))
	}
	// The daemon keeps no thread with the account's identity but, at
	// most, one parked for good.
	if n := threadsOfFSUID(t, e.daemon.Process.Pid, want); want != 0 && n > 1 {
		t.Fatalf("%d daemon threads have fsuid %d", n, want)
	}
}

// procNetUID is the owner of the IPv4 socket bound to local, from
// /proc/net/<network>.
func procNetUID(t *testing.T, network string, local *net.TCPAddr) int {
	t.Helper()
	ip := local.AddrPort().Addr().As4()
	key := fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ip[:]), local.Port)
	b, err := os.ReadFile("/proc/net/" + network)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 7 && f[1] == key {
			uid, err := strconv.Atoi(f[7])
			if err != nil {
				t.Fatalf("/proc/net/%s: %q", network, line)
			}
			return uid
		}
	}
	t.Fatalf("no socket %s (%v) in /proc/net/%s", key, local, network)
	return -1
}

func threadsOfFSUID(t *testing.T, pid, uid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 5 && f[0] == "Uid:" && f[4] == strconv.Itoa(uid) {
				n++
			}
		}
	}
	return n
}

// Sid-less sessions end with the link like every other session: a
// sid-less forward is closed at the drop (its destination sees EOF) and
// nothing of it reaches the next link; a sid-less upload's temporary
// file is removed at once, not after the 60 s ack timeout.
func TestSidlessSessionsEndOnLinkDrop(t *testing.T) {
	dir := ftDir(t)
	accepted := make(chan net.Conn, 1)
	done := make(chan struct{})
	port := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		accepted <- c
		<-done
	})
	t.Cleanup(func() { close(done) }) // before tcpServer's, which waits for the handler
	e := newEnv(t, nil)
	d := e.waitDevice()
	frames, cancel := d.Subscribe()
	defer cancel()
	waitFrame := func(proto uint16, typ string) *wire.ProtoMsg {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-frames:
				if !ok {
					t.Fatalf("link ended waiting for %d/%s", proto, typ)
				}
				if m.Header.Proto == proto && m.Header.MsgType == typ {
					return m
				}
			case <-timeout:
				t.Fatalf("no %d/%s from the device", proto, typ)
			}
		}
	}

	// A sid-less forward, open and carrying data.
	e.sendRaw(d, pfFrame(t, "new", "", "anon-1", pfNewBody(t, "127.0.0.1", port)))
	waitFrame(wire.ProtoPortForward, "new")
	var dest net.Conn
	select {
	case dest = <-accepted:
	case <-time.After(15 * time.Second):
		t.Fatal("the device did not connect to the destination")
	}
	e.sendRaw(d, pfFrame(t, "forward", "", "anon-1", []byte("before")))
	buf := make([]byte, 64)
	_ = dest.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.ReadAtLeast(dest, buf, len("before")); err != nil || string(buf[:n]) != "before" {
		t.Fatalf("destination read %q, %v", buf[:n], err)
	}

	// A sid-less upload, started and not finished.
	path := filepath.Join(dir, "a.txt")
	body, err := msgpack.Marshal(map[string]interface{}{"path": path, "mode": 0o644})
	if err != nil {
		t.Fatal(err)
	}
	e.sendRaw(d, frame(t, int(wire.ProtoFileTransfer), "put_file", "", nil, body))
	waitFrame(wire.ProtoFileTransfer, "ack")
	e.sendRaw(d, frame(t, int(wire.ProtoFileTransfer), "file_chunk", "", map[string]interface{}{wire.PropOffset: int64(0)}, []byte("partial")))
	if tmp := tempFiles(t, dir); len(tmp) != 1 {
		t.Fatalf("temporary files during the upload: %v", tmp)
	}

	cancel()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := e.waitDevice()
	frames2, cancel2 := d2.Subscribe()
	defer cancel2()

	_ = dest.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := dest.Read(buf); err != io.EOF {
		t.Fatalf("the sid-less forward's destination read %q, %v after the link drop; want EOF", buf[:n], err)
	}
	eventually(t, 10*time.Second, "the upload's temporary file removed", func() bool { return len(tempFiles(t, dir)) == 0 })
	if _, err := os.Stat(path); err == nil {
		t.Fatal("the unfinished upload was completed")
	}

	// On the new link the old connection is unknown and nothing of it
	// arrives.
	e.sendRaw(d2, pfFrame(t, "forward", "", "anon-1", []byte("after")))
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-frames2:
			if !ok {
				t.Fatal("the new link ended")
			}
			if m.Header.Proto != wire.ProtoPortForward {
				continue
			}
			if m.Header.MsgType != "error" {
				t.Fatalf("the old sid-less connection sent %q on the new link", m.Header.MsgType)
			}
			var eb struct {
				Err string `msgpack:"err"`
			}
			_ = msgpack.Unmarshal(m.Body, &eb)
			if eb.Err != "unknown connection" {
				t.Fatalf("forward on the new link: %q, want unknown connection", eb.Err)
			}
			return
		case <-timeout:
			t.Fatal("no answer to the forward on the new link")
		}
	}
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tether-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// metricOr0 is the value of a sample, 0 while it does not exist yet.
func (e *env) metricOr0(name string) float64 {
	e.t.Helper()
	m, _ := e.cfg["Metrics"].(map[string]interface{})
	addr, _ := m["Listen"].(string)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		e.t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("scrape %s: %v", addr, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				e.t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// A keystroke through a forwarded SSH (one 36-byte packet each way) does
// not show in the byte counters any local user can poll.
func TestPortForwardKeystrokesHidden(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	port := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	_, addr := e.forward("127.0.0.1", port)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := bytes.Repeat([]byte{0x5a}, 36)
	for i := 0; i < 5; i++ {
		if _, err := c.Write(key); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, len(key))); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{"in", "out"} {
			if got := e.metric(`tether_portforward_bytes_total{direction="` + dir + `"}`); got != 0 {
				t.Fatalf("after keystroke %d the %s counter reads %v", i+1, dir, got)
			}
		}
	}
}
