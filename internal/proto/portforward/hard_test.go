package portforward

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"github.com/tether-agent/tether/internal/identity"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/fdbudget"
	"github.com/tether-agent/tether/internal/wire"
)

// What a hostile peer can make the protocol hold, and whose its sockets
// are.

func longID(n int) string { return strings.Repeat("i", n) }

// Identifiers and hosts longer than any real one are refused with the
// protocol's error, which does not carry them back; nothing is dialed.
func TestOversizedFieldsRefused(t *testing.T) {
	p := New(Options{})
	out := make(chanSender, 100)
	s := p.Open("s1", out)
	defer s.Close()
	port := echoServer(t)
	tests := []struct {
		name   string
		msg    *wire.ProtoMsg
		wantID string
		want   string
	}{
		{"new with a 1 MB id", newMsg(t, longID(1_000_000), "tcp", "127.0.0.1", port), "",
			"connection_id too long: 1000000 bytes, at most 128"},
		{"forward to a 1 MB id", pfMsg(TypeForward, longID(1_000_000), []byte("x")), "",
			"connection_id too long: 1000000 bytes, at most 128"},
		{"ack of a 129-byte id", pfMsg(TypeAck, longID(129), nil), "", "connection_id too long: 129 bytes, at most 128"},
		{"stop of a 200 KB id", pfMsg(TypeStop, longID(200_000), nil), "", "connection_id too long: 200000 bytes, at most 128"},
		{"unknown type with a 1 MB id", pfMsg("bogus", longID(1_000_000), nil), "", "connection_id too long: 1000000 bytes, at most 128"},
		{"new with a 400 KB host", newMsg(t, "h1", "tcp", longID(400_000), port), "h1",
			"remote_host too long: 400000 bytes, at most 253"},
		{"new with a 254-byte host", newMsg(t, "h2", "tcp", longID(254), port), "h2",
			"remote_host too long: 254 bytes, at most 253"},
		{"new with a 1 MB protocol", newMsg(t, "h3", longID(1_000_000), "127.0.0.1", port), "h3",
			"unknown protocol: " + longID(128) + "…(1000000 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Handle(tt.msg)
			m := recv(t, out, TypeError)
			if got := errText(t, m); got != tt.want {
				t.Errorf("error %q, want %q", got, tt.want)
			}
			if got := m.Header.StringProp(wire.PropConnectionID); got != tt.wantID {
				t.Errorf("reply carries connection_id of %d bytes, want %q", len(got), tt.wantID)
			}
			if len(m.Body) > 512 {
				t.Errorf("reply body of %d bytes", len(m.Body))
			}
		})
	}
	// An id at the limit is served.
	id := longID(128)
	s.Handle(newMsg(t, id, "tcp", "127.0.0.1", port))
	if m := recv(t, out, TypeNew); m.Header.StringProp(wire.PropConnectionID) != id {
		t.Fatal("the new of a 128-byte id was not answered with its id")
	}
	s.Handle(pfMsg(TypeStop, id, nil))
	recv(t, out, TypeStop)
	waitIdle(t, p)
}

// blockSender takes nothing until released: the link is slow.
type blockSender struct {
	release chan struct{}
	mu      sync.Mutex
	got     []*wire.ProtoMsg
}

func (b *blockSender) Send(ctx context.Context, m *wire.ProtoMsg) error {
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	b.got = append(b.got, m)
	b.mu.Unlock()
	return nil
}

// Answers waiting for a slow link are bounded in bytes, not in count.
func TestRepliesBoundedInBytes(t *testing.T) {
	p := New(Options{})
	out := &blockSender{release: make(chan struct{})}
	s := p.Open("s1", out)
	defer s.Close()
	const n = 1000
	for i := 0; i < n; i++ {
		// Ids at the limit, each answered "unknown connection".
		s.Handle(pfMsg(TypeForward, fmt.Sprintf("%0128d", i), []byte("x")))
	}
	close(out.release)
	var got []*wire.ProtoMsg
	for quiet := 0; quiet < 20; quiet++ {
		time.Sleep(10 * time.Millisecond)
		out.mu.Lock()
		if len(out.got) != len(got) {
			quiet = 0
		}
		got = append([]*wire.ProtoMsg(nil), out.got...)
		out.mu.Unlock()
	}
	bytes := 0
	for _, m := range got {
		b, err := wire.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		bytes += len(b)
	}
	t.Logf("%d of %d answers kept while the link was blocked: %d bytes", len(got), n, bytes)
	if len(got) == 0 {
		t.Fatal("no answer at all")
	}
	if bytes > 8<<10 {
		t.Fatalf("%d bytes of answers waited for the link, want at most 8 KiB", bytes)
	}
}

// The peer's data waiting for destinations is bounded in sum over every
// connection, while a connection within its floor is still served.
func TestPendingBoundedAcrossConnections(t *testing.T) {
	// Dials into a full accept queue hang: everything the peer sends
	// meanwhile waits in the connections' buffers.
	full := fullBacklog(t)
	p := New(Options{DialTimeout: time.Minute})
	out := make(chanSender, 1000)
	s := p.Open("s1", out)
	const conns = 40
	chunk := bytes.Repeat([]byte("y"), 32<<10)
	for i := 0; i < conns; i++ {
		id := fmt.Sprint("c", i)
		s.Handle(newMsg(t, id, "tcp", "127.0.0.1", full))
		for j := 0; j < 4; j++ { // 128 KiB each: within the per-connection limit
			s.Handle(pfMsg(TypeForward, id, chunk))
		}
	}
	// A connection that behaves: one small forward at a time.
	s.Handle(newMsg(t, "polite", "tcp", "127.0.0.1", full))
	s.Handle(pfMsg(TypeForward, "polite", chunk[:4096]))
	overflows := 0
	for done := false; !done; {
		select {
		case m := <-out:
			if m.Header.MsgType == TypeError {
				if id := m.Header.StringProp(wire.PropConnectionID); id == "polite" {
					t.Fatalf("the polite connection was refused: %s", errText(t, m))
				}
				overflows++
			}
		case <-time.After(200 * time.Millisecond):
			done = true
		}
	}
	held := p.pending.Load()
	t.Logf("%d connections overran the shared pool; %d bytes drawn from it", overflows, held)
	if overflows == 0 {
		t.Fatalf("%d connections × 128 KiB were all kept", conns)
	}
	if held > maxPendingAll {
		t.Fatalf("%d bytes drawn from a pool of %d", held, maxPendingAll)
	}
	s.Close()
	waitIdle(t, p)
	if n := p.pending.Load(); n != 0 {
		t.Fatalf("%d bytes still drawn from the pool after the session closed", n)
	}
}

// Each connection takes one descriptor from the budget and gives it back.
func TestFDBudget(t *testing.T) {
	port := echoServer(t)
	fds := fdbudget.New(2)
	p := New(Options{FDs: fds})
	out := make(chanSender, 100)
	s := p.Open("s1", out)
	defer s.Close()
	for _, id := range []string{"a", "b"} {
		s.Handle(newMsg(t, id, "tcp", "127.0.0.1", port))
		recv(t, out, TypeNew)
	}
	s.Handle(newMsg(t, "c", "tcp", "127.0.0.1", port))
	m := recv(t, out, TypeError)
	if got := errText(t, m); got != "too many open files on the device: port-forward connection refused" {
		t.Fatalf("third connection: %q", got)
	}
	if fds.InUse() != 2 {
		t.Fatalf("%d descriptors in use, want 2", fds.InUse())
	}
	s.Handle(pfMsg(TypeStop, "a", nil))
	recv(t, out, TypeStop)
	waitFor(t, "a descriptor back", func() bool { return fds.InUse() == 1 })
	s.Handle(newMsg(t, "c", "tcp", "127.0.0.1", port))
	recv(t, out, TypeNew)
	// A dial that fails gives its descriptor back too.
	s.Handle(newMsg(t, "d", "tcp", "127.0.0.1", freePort(t)))
	recv(t, out, TypeError)
	s.Close()
	waitIdle(t, p)
	if fds.InUse() != 0 {
		t.Fatalf("%d descriptors still in use after the session closed", fds.InUse())
	}
}

// The defaults let a browser or a parallel download through one forward:
// 128 connections of one session, each carrying data.
func TestManyConnectionsOneSession(t *testing.T) {
	port := echoServer(t)
	p := New(Options{})
	out := make(chanSender, 4096)
	s := p.Open("s1", out)
	defer s.Close()
	const n = 128
	for i := 0; i < n; i++ {
		s.Handle(newMsg(t, fmt.Sprint("c", i), "tcp", "127.0.0.1", port))
	}
	opened := 0
	for opened < n {
		m := next(t, out)
		switch m.Header.MsgType {
		case TypeNew:
			opened++
		case TypeError:
			t.Fatalf("connection %s: %s", m.Header.StringProp(wire.PropConnectionID), errText(t, m))
		}
	}
	for i := 0; i < n; i++ {
		s.Handle(pfMsg(TypeForward, fmt.Sprint("c", i), []byte(fmt.Sprint("data-", i))))
	}
	echoed := map[string]string{}
	for len(echoed) < n {
		m := next(t, out)
		if m.Header.MsgType == TypeForward {
			echoed[m.Header.StringProp(wire.PropConnectionID)] += string(m.Body)
		}
	}
	for i := 0; i < n; i++ {
		if got, want := echoed[fmt.Sprint("c", i)], fmt.Sprint("data-", i); got != want {
			t.Errorf("connection %d echoed %q, want %q", i, got, want)
		}
	}
	s.Handle(newMsg(t, "one-too-many", "tcp", "127.0.0.1", port))
	for {
		m := next(t, out)
		if m.Header.MsgType == TypeError {
			if got := errText(t, m); got != "too many port-forward connections in this session (limit 128)" {
				t.Fatalf("connection %d: %q", n+1, got)
			}
			break
		}
	}
}

// A forwarded connection's socket belongs to the configured account, as
// the kernel sees it (/proc/net/tcp, /proc/net/udp), and no thread of the
// daemon keeps the account's identity afterwards.
func TestSocketOwnerIsTheAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("switching identity needs root: run the tests as root (CI does)")
	}
	const nobody = 65534
	id := &identity.Identity{Name: "nobody", UID: nobody, GID: nobody, Groups: []uint32{nobody}}
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			p := New(Options{Identity: id})
			out := make(chanSender, 100)
			s := p.Open("s1", out)
			defer s.Close()
			var local string // the device side's address as /proc shows it
			switch network {
			case "tcp":
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				s.Handle(newMsg(t, "c", "tcp", "127.0.0.1", l.Addr().(*net.TCPAddr).Port))
				recv(t, out, TypeNew)
				c, err := l.Accept()
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				local = procAddr(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().As4(), c.RemoteAddr().(*net.TCPAddr).Port)
			case "udp":
				pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				s.Handle(newMsg(t, "c", "udp", "127.0.0.1", pc.LocalAddr().(*net.UDPAddr).Port))
				recv(t, out, TypeNew)
				s.Handle(pfMsg(TypeForward, "c", []byte("hi")))
				_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, from, err := pc.ReadFromUDP(make([]byte, 16))
				if err != nil {
					t.Fatal(err)
				}
				local = procAddr(from.AddrPort().Addr().As4(), from.Port)
			}
			if uid := socketUID(t, network, local); uid != nobody {
				t.Fatalf("the forwarded socket %s belongs to uid %d, want %d", local, uid, nobody)
			}
			// The switched threads end with their goroutines. (One that
			// ran on the main thread cannot end: the runtime parks that
			// thread for good instead, so at most one remains, idle.)
			waitFor(t, "the switched threads to end", func() bool { return threadsWithFSUID(t, nobody) <= 1 })
			// No goroutine runs with the account's identity.
			var wg sync.WaitGroup
			for i := 0; i < 64; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < 10; j++ {
						if uid := threadFSUID(t); uid != 0 {
							t.Errorf("a goroutine ran with fsuid %d", uid)
							return
						}
						runtime.Gosched()
					}
				}()
			}
			wg.Wait()
		})
	}
}

// procAddr is an IPv4 address and port as /proc/net/{tcp,udp} write them.
func procAddr(ip [4]byte, port int) string {
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ip[:]), port)
}

// socketUID is the owner of the socket bound to local in /proc/net/<network>.
func socketUID(t *testing.T, network, local string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc/net", network))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 7 && f[1] == local {
			uid, err := strconv.Atoi(f[7])
			if err != nil {
				t.Fatalf("/proc/net/%s: %q", network, line)
			}
			return uid
		}
	}
	t.Fatalf("no socket %s in /proc/net/%s", local, network)
	return -1
}

// threadsWithFSUID counts this process's threads whose fsuid is uid.
func threadsWithFSUID(t *testing.T, uid int) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "status"))
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 5 && f[0] == "Uid:" && f[4] == strconv.Itoa(uid) {
				n++
			}
		}
	}
	return n
}

// next is the next frame from the device, whatever its type.
func next(t *testing.T, out chanSender) *wire.ProtoMsg {
	t.Helper()
	select {
	case m := <-out:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing from the device")
		return nil
	}
}

// threadFSUID is the fsuid of the calling goroutine's current thread.
func threadFSUID(t *testing.T) int {
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Error(err)
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 5 && f[0] == "Uid:" {
			n, _ := strconv.Atoi(f[4])
			return n
		}
	}
	return -1
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitIdle(t *testing.T, p *Protocol) {
	t.Helper()
	waitFor(t, "every connection closed", func() bool { return p.Active() == 0 })
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fullBacklog listens on loopback with a backlog of 0, never accepts and
// fills the accept queue, so that further connects hang unanswered.
func fullBacklog(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	port := sa.(*syscall.SockaddrInet4).Port
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Fatal("the accept queue does not fill")
		}
	}
	return port
}
