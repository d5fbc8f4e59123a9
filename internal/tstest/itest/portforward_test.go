package itest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// pfConfig is a PortForward section with the given overrides.
func pfConfig(kv ...interface{}) map[string]interface{} {
	m := map[string]interface{}{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return map[string]interface{}{"PortForward": m}
}

// forward opens a port forward like mender-cli and serves a local tcp
// listener to host:port on the device's side; it returns the local address.
func (e *env) forward(host string, port int) (*mockserver.PortForward, string) {
	e.t.Helper()
	pf := e.openPF()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	pf.ServeTCP(l, host, uint16(port))
	return pf, l.Addr().String()
}

func (e *env) openPF() *mockserver.PortForward {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	pf, err := mockserver.OpenPortForward(ctx, e.url, e.jwt(adminEmail), e.deviceID, e.t.Logf)
	if err != nil {
		e.t.Fatalf("open port forward: %v", err)
	}
	e.t.Cleanup(func() {
		pf.Close()
		if n := pf.StrayAcks(); n != 0 {
			e.t.Errorf("the device sent %d acks with nothing outstanding (mender-cli dies of those)", n)
		}
	})
	return pf
}

// tcpServer runs handle for every connection on a loopback listener.
func tcpServer(t *testing.T, network, addr string, handle func(net.Conn)) int {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// roundTrip writes n random bytes through addr and checks they come back.
func roundTrip(t *testing.T, addr string, n int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	go func() { _, _ = c.Write(data) }()
	got := make([]byte, n)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo of %d bytes: %v", n, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echo differs from what was sent")
	}
}

func TestPortForwardTCPEcho(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	port := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	_, addr := e.forward("127.0.0.1", port)
	roundTrip(t, addr, 1<<20)
	roundTrip(t, addr, 1)
	if got := e.metric(`tether_portforward_bytes_total{direction="out"}`); got < 1<<20 {
		t.Fatalf("bytes out metric %v", got)
	}
	if got := e.metric(`tether_portforward_connections_opened_total{proto="tcp"}`); got != 2 {
		t.Fatalf("opened metric %v", got)
	}
	eventually(t, 5*time.Second, "no active connection", func() bool {
		return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 0
	})
}

func TestPortForwardIPv6Loopback(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	port := tcpServer(t, "tcp6", "[::1]:0", echo)
	_, addr := e.forward("::1", port)
	roundTrip(t, addr, 100000)
}

func TestPortForwardUDPEcho(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteToUDP(bytes.ToUpper(buf[:n]), from)
		}
	}()
	pf := e.openPF()
	local, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.ServeUDP(local, "127.0.0.1", uint16(srv.LocalAddr().(*net.UDPAddr).Port)); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", local.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 100)
	// UDP may lose the first datagram while the device dials; retry.
	for i := 0; ; i++ {
		msg := fmt.Sprintf("ping-%d", i)
		_, _ = c.Write([]byte(msg))
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			if got := string(buf[:n]); !strings.HasPrefix(got, "PING-") {
				t.Fatalf("udp echo %q", got)
			}
			break
		}
		if i == 20 {
			t.Fatalf("no udp echo: %v", err)
		}
	}
	if got := e.metric(`tether_portforward_connections_active{proto="udp"}`); got != 1 {
		t.Fatalf("udp active %v", got)
	}
}

func TestPortForward100Parallel(t *testing.T) {
	e := newEnv(t, pfConfig("MaxConnections", 128, "MaxTotal", 128))
	e.waitDevice()
	port := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	_, addr := e.forward("127.0.0.1", port)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	conns := make([]net.Conn, 100)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	for i, c := range conns {
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			msg := []byte(strings.Repeat(strconv.Itoa(i%10), 10000))
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
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
	if got := e.metric(`tether_portforward_connections_active{proto="tcp"}`); got != 100 {
		t.Fatalf("active connections %v, want 100", got)
	}
}

// A destination that answers and closes: every byte arrives before the
// local connection ends.
func TestPortForwardRemoteCloses(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	payload := bytes.Repeat([]byte("bye "), 50000)
	port := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { _, _ = c.Write(payload) })
	_, addr := e.forward("127.0.0.1", port)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read %d of %d bytes: %v", len(got), len(payload), err)
	}
	eventually(t, 5*time.Second, "no active connection", func() bool {
		return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 0
	})
}

// A destination that never reads: the peer's data waits in bounded
// buffers (the device acks only what it wrote), the daemon's memory stays
// flat, shells keep working, and the idle timeout frees the connection.
func TestPortForwardRemoteNeverReads(t *testing.T) {
	e := newEnv(t, pfConfig("IdleTimeout", "3s"))
	e.waitDevice()
	hold := make(chan struct{})
	defer close(hold)
	port := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { <-hold })
	_, addr := e.forward("127.0.0.1", port)
	rss0 := rssKB(t, e.daemon.Process.Pid)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wrote := make(chan int64, 1)
	go func() {
		var n int64
		buf := make([]byte, 64<<10)
		for {
			_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			k, err := c.Write(buf)
			n += int64(k)
			if err != nil {
				wrote <- n
				return
			}
		}
	}()
	// The flow stops: the metric of bytes written to the destination
	// settles.
	var last float64 = -1
	eventually(t, 20*time.Second, "the flow to stop", func() bool {
		v := e.metric(`tether_portforward_bytes_total{direction="in"}`)
		settled := v > 0 && v == last
		last = v
		time.Sleep(200 * time.Millisecond)
		return settled
	})
	if last > 64<<20 {
		t.Fatalf("%v bytes went into a destination that never reads", last)
	}
	if grow := rssKB(t, e.daemon.Process.Pid) - rss0; grow > 16<<10 {
		t.Fatalf("daemon RSS grew by %d KiB", grow)
	}
	term := e.open(adminEmail)
	e.run(term, "true")
	// Nothing came back from the destination for IdleTimeout: the device
	// stops the connection.
	select {
	case n := <-wrote:
		t.Logf("local writer ended after %d bytes", n)
	case <-time.After(30 * time.Second):
		t.Fatal("the idle timeout did not end the connection")
	}
	eventually(t, 10*time.Second, "no active connection", func() bool {
		return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 0
	})
}

func rssKB(t *testing.T, pid int) int {
	t.Helper()
	st, err := readFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(st, "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// raw is a user connection that speaks proto 3 by hand.
type raw struct {
	e   *env
	t   *mockserver.Terminal
	sid string
}

func (e *env) raw() *raw {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	term, err := mockserver.Dial(ctx, e.url, e.jwt(adminEmail), e.deviceID)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { term.Close() })
	r := &raw{e: e, t: term}
	body, _ := msgpack.Marshal(&wire.OpenBody{Versions: []int{1}})
	r.send(wire.ProtoControl, wire.TypeOpen, "", body)
	m := r.next(wire.ProtoControl, wire.TypeAccept)
	r.sid = m.Header.SessionID
	return r
}

func (r *raw) send(proto uint16, typ, connID string, body []byte) {
	r.e.t.Helper()
	h := wire.Header{Proto: proto, MsgType: typ, SessionID: r.sid}
	if connID != "" {
		h.Properties = map[string]interface{}{wire.PropConnectionID: connID}
	}
	if err := r.t.Send(&wire.ProtoMsg{Header: h, Body: body}); err != nil {
		r.e.t.Fatal(err)
	}
}

func (r *raw) newConn(id, network, host string, port int) {
	body, _ := msgpack.Marshal(map[string]interface{}{"remote_host": host, "remote_port": uint16(port), "protocol": network})
	r.send(wire.ProtoPortForward, "new", id, body)
}

// next returns the next message of proto and typ, skipping others.
func (r *raw) next(proto uint16, typ string) *wire.ProtoMsg {
	r.e.t.Helper()
	return r.nextOf(proto, typ)
}

func (r *raw) nextOf(proto uint16, types ...string) *wire.ProtoMsg {
	r.e.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-r.t.Messages():
			if !ok {
				r.e.t.Fatalf("connection ended waiting for %d/%v: %v", proto, types, r.t.Err())
			}
			if m.Header.Proto == proto && slices.Contains(types, m.Header.MsgType) {
				return m
			}
		case <-timeout:
			r.e.t.Fatalf("no %d/%v from the device", proto, types)
		}
	}
}

func (r *raw) errText() string {
	r.e.t.Helper()
	m := r.next(wire.ProtoPortForward, "error")
	var b struct {
		Err     string `msgpack:"err"`
		MsgType string `msgpack:"msgtype"`
	}
	if err := msgpack.Unmarshal(m.Body, &b); err != nil {
		r.e.t.Fatal(err)
	}
	return b.Err
}

func TestPortForwardDialFailures(t *testing.T) {
	e := newEnv(t, pfConfig("DialTimeout", "500ms"))
	e.waitDevice()
	closed := freePort(t)
	full := fullBacklog(t)
	r := e.raw()
	r.newConn("refused", "tcp", "127.0.0.1", closed)
	if got := r.errText(); got != fmt.Sprintf("dial tcp 127.0.0.1:%d: connect: connection refused", closed) {
		t.Fatalf("closed port: %q", got)
	}
	t0 := time.Now()
	r.newConn("slow", "tcp", "127.0.0.1", full)
	// Meanwhile the session and the daemon keep serving.
	term := e.open(adminEmail)
	e.run(term, "true")
	if got := r.errText(); !strings.Contains(got, "i/o timeout") {
		t.Fatalf("dial into a full backlog: %q", got)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("the dial timeout of 500ms took %v", d)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fullBacklog listens on loopback with a backlog of 0, never accepts and
// fills the accept queue, so that further SYNs go unanswered.
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

func TestPortForwardAllowList(t *testing.T) {
	port := 0
	e := newEnv(t, nil)
	port = tcpServer(t, "tcp", "127.0.0.1:0", echo)
	e.stopDaemon()
	e.cfg["PortForward"] = map[string]interface{}{"Allow": []string{fmt.Sprintf("tcp/127.0.0.1:%d", port), "udp/localhost:5353"}}
	e.startDaemon()
	e.waitDevice()
	r := e.raw()
	r.newConn("ok", "tcp", "127.0.0.1", port)
	r.next(wire.ProtoPortForward, "new")
	for i, tc := range []struct {
		network, host string
		port          int
		want          string
	}{
		{"tcp", "127.0.0.1", port + 1, fmt.Sprintf("access denied: tcp/127.0.0.1:%d is not in PortForward.Allow", port+1)},
		{"udp", "127.0.0.1", port, fmt.Sprintf("access denied: udp/127.0.0.1:%d is not in PortForward.Allow", port)},
		{"tcp", "::1", port, fmt.Sprintf("access denied: tcp/[::1]:%d is not in PortForward.Allow", port)},
		{"tcp", "localhost", port + 1, fmt.Sprintf("access denied: tcp/localhost:%d is not in PortForward.Allow", port+1)},
	} {
		r.newConn(fmt.Sprint("d", i), tc.network, tc.host, tc.port)
		if got := r.errText(); got != tc.want {
			t.Errorf("%s/%s:%d: %q, want %q", tc.network, tc.host, tc.port, got, tc.want)
		}
	}
	if got := e.metric(`tether_portforward_denied_total{reason="allow_list"}`); got != 4 {
		t.Fatalf("allow_list denials %v, want 4", got)
	}
}

func TestPortForwardLimits(t *testing.T) {
	e := newEnv(t, pfConfig("MaxConnections", 2, "MaxTotal", 3))
	e.waitDevice()
	port := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	a, b := e.raw(), e.raw()
	for _, id := range []string{"a1", "a2"} {
		a.newConn(id, "tcp", "127.0.0.1", port)
		a.next(wire.ProtoPortForward, "new")
	}
	a.newConn("a3", "tcp", "127.0.0.1", port)
	if got := a.errText(); got != "too many port-forward connections in this session (limit 2)" {
		t.Fatalf("session limit: %q", got)
	}
	b.newConn("b1", "tcp", "127.0.0.1", port)
	b.next(wire.ProtoPortForward, "new")
	b.newConn("b2", "tcp", "127.0.0.1", port)
	if got := b.errText(); got != "too many port-forward connections on the device (limit 3)" {
		t.Fatalf("total limit: %q", got)
	}
	// A stop frees a slot.
	a.send(wire.ProtoPortForward, "stop", "a1", nil)
	a.next(wire.ProtoPortForward, "stop")
	eventually(t, 5*time.Second, "slot freed", func() bool {
		return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 2
	})
	b.newConn("b3", "tcp", "127.0.0.1", port)
	b.next(wire.ProtoPortForward, "new")
	if got := e.metric(`tether_portforward_denied_total{reason="total_limit"}`); got != 1 {
		t.Fatalf("total_limit denials %v", got)
	}
}

// Every stray message gets the protocol's answer or is ignored; the
// daemon neither crashes nor stalls, and its shells keep working.
func TestPortForwardStrayMessages(t *testing.T) {
	e := newEnv(t, pfConfig("Window", 4, "IdleTimeout", "2s"))
	e.waitDevice()
	term := e.open(adminEmail)
	flood := bytes.Repeat([]byte("x"), 1<<20)
	floodPort := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		for {
			if _, err := c.Write(flood); err != nil {
				return
			}
		}
	})
	echoPort := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	hold := make(chan struct{})
	defer close(hold)
	sinkPort := tcpServer(t, "tcp", "127.0.0.1:0", func(net.Conn) { <-hold })
	r := e.raw()

	// Upstream dies of this one (unlock of an unlocked mutex).
	r.newConn("c1", "tcp", "127.0.0.1", echoPort)
	r.next(wire.ProtoPortForward, "new")
	for i := 0; i < 10; i++ {
		r.send(wire.ProtoPortForward, "ack", "c1", nil)
	}
	r.send(wire.ProtoPortForward, "forward", "c1", []byte("still alive"))
	// The ack and the echo may come in either order.
	var echoed string
	for acked := false; !acked || echoed == ""; {
		m := r.nextOf(wire.ProtoPortForward, "ack", "forward")
		if m.Header.MsgType == "ack" {
			acked = true
		} else {
			echoed += string(m.Body)
		}
	}
	if echoed != "still alive" {
		t.Fatalf("echo after stray acks: %q", echoed)
	}
	r.send(wire.ProtoPortForward, "ack", "c1", nil)
	for _, tc := range []struct {
		typ, id string
		body    []byte
		want    string
	}{
		{"ack", "nope", nil, "unknown connection"},
		{"forward", "nope", []byte("x"), "unknown connection"},
		{"stop", "nope", nil, "unknown connection"},
		{"ack", "", nil, "unknown connection"},
		{"frobnicate", "c1", nil, "unknown message type"},
		{"new", "bad", []byte{0xc1}, ""},
		{"new", "", nil, "invalid port-forward message: missing connection_id, remote_port or protocol"},
	} {
		r.send(wire.ProtoPortForward, tc.typ, tc.id, tc.body)
		if got := r.errText(); tc.want != "" && got != tc.want {
			t.Errorf("%s %q: %q, want %q", tc.typ, tc.id, got, tc.want)
		}
	}
	// A duplicate new keeps the live connection.
	r.newConn("c1", "tcp", "127.0.0.1", echoPort)
	if got := r.errText(); got != "connection_id already in use: c1" {
		t.Errorf("duplicate new: %q", got)
	}
	// Forward after stop.
	r.send(wire.ProtoPortForward, "stop", "c1", nil)
	r.next(wire.ProtoPortForward, "stop")
	r.send(wire.ProtoPortForward, "forward", "c1", []byte("late"))
	if got := r.errText(); got != "unknown connection" {
		t.Errorf("forward after stop: %q", got)
	}

	// A peer that never acks gets Window forwards and then nothing, until
	// the idle timeout stops the connection.
	r.newConn("noack", "tcp", "127.0.0.1", floodPort)
	r.next(wire.ProtoPortForward, "new")
	forwards := 0
	deadline := time.After(20 * time.Second)
wait:
	for {
		select {
		case m := <-r.t.Messages():
			if m.Header.Proto != wire.ProtoPortForward {
				continue
			}
			switch m.Header.MsgType {
			case "forward":
				forwards++
			case "stop":
				break wait
			}
		case <-deadline:
			t.Fatal("no stop for the connection whose peer never acks")
		}
	}
	if forwards != 4 {
		t.Errorf("%d forwards without acks, want the window of 4", forwards)
	}

	// A peer that ignores the flow control towards a destination that
	// does not read gets an error once the bounded buffer is full.
	r.newConn("over", "tcp", "127.0.0.1", sinkPort)
	r.next(wire.ProtoPortForward, "new")
	chunk := bytes.Repeat([]byte("y"), 32<<10)
	for i := 0; i < 256; i++ {
		r.send(wire.ProtoPortForward, "forward", "over", chunk)
	}
	if got := r.errText(); !strings.HasPrefix(got, "too much unacknowledged data") && got != "unknown connection" {
		t.Errorf("overflow: %q", got)
	}

	out := e.run(term, "echo shell-$((40+2))")
	if !strings.Contains(out, "shell-42") {
		t.Fatalf("shell after the stray messages: %q", out)
	}
	if e.srv.DeviceConnects(e.deviceID) != 1 {
		t.Fatal("the link was dropped")
	}
	if got := e.metric(`tether_portforward_ignored_total{kind="stray_ack"}`); got < 9 {
		t.Errorf("stray acks counted: %v", got)
	}
	if strings.Contains(e.log.String(), "DATA RACE") || strings.Contains(e.log.String(), "panic") {
		t.Fatal("the daemon raced or panicked")
	}
}

// Connections and their goroutines and fds go away with the connections.
func TestPortForwardNoLeaks(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	port := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	pf, addr := e.forward("127.0.0.1", port)
	roundTrip(t, addr, 10)
	time.Sleep(200 * time.Millisecond)
	fds0, g0 := e.fdCount(), e.goroutines()
	for i := 0; i < 50; i++ {
		roundTrip(t, addr, 1000)
	}
	eventually(t, 10*time.Second, "connections closed", func() bool {
		return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 0
	})
	eventually(t, 5*time.Second, fmt.Sprintf("fd count back to %d", fds0), func() bool { return e.fdCount() <= fds0 })
	eventually(t, 5*time.Second, fmt.Sprintf("goroutines back to %d", g0), func() bool { return e.goroutines() <= g0 })
	// Ending the session (control close) closes what it still has.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, 10*time.Second, "a connection open", func() bool {
		return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 1
	})
	pf.Close()
	eventually(t, 10*time.Second, "session's connections closed", func() bool {
		return e.metric(`tether_portforward_connections_active{proto="tcp"}`) == 0
	})
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}
