package portforward

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/tstest/leakcheck"
	"github.com/tether-agent/tether/internal/wire"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// chanSender hands every frame to the test.
type chanSender chan *wire.ProtoMsg

func (c chanSender) Send(ctx context.Context, m *wire.ProtoMsg) error {
	// Copy the body as the real Sender does (it marshals).
	cp := *m
	cp.Body = append([]byte(nil), m.Body...)
	select {
	case c <- &cp:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func recv(t *testing.T, out chanSender, typ string) *wire.ProtoMsg {
	t.Helper()
	for {
		select {
		case m := <-out:
			if m.Header.MsgType == typ {
				return m
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q from the device", typ)
		}
	}
}

// recvAckAndForward waits for the device's ack of a peer forward and for
// the forward carrying the destination's echo, in either order: the ack
// goes out once the write to the destination is done, and by then the
// echo may already be on its way back.
func recvAckAndForward(t *testing.T, out chanSender) *wire.ProtoMsg {
	t.Helper()
	var acked bool
	var fwd *wire.ProtoMsg
	for !acked || fwd == nil {
		select {
		case m := <-out:
			switch m.Header.MsgType {
			case TypeAck:
				acked = true
			case TypeForward:
				if fwd != nil {
					t.Fatalf("a second forward %q before the ack", m.Body)
				}
				fwd = m
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("from the device: ack %v, forward %v; want both", acked, fwd != nil)
		}
	}
	return fwd
}

func errText(t *testing.T, m *wire.ProtoMsg) string {
	t.Helper()
	var e ErrorBody
	if err := msgpack.Unmarshal(m.Body, &e); err != nil {
		t.Fatal(err)
	}
	return e.Error
}

func newMsg(t *testing.T, id, network, host string, port int) *wire.ProtoMsg {
	p := uint16(port)
	b, err := msgpack.Marshal(&NewBody{RemoteHost: &host, RemotePort: &p, Protocol: &network})
	if err != nil {
		t.Fatal(err)
	}
	return pfMsg(TypeNew, id, b)
}

func pfMsg(typ, id string, body []byte) *wire.ProtoMsg {
	h := wire.Header{Proto: wire.ProtoPortForward, MsgType: typ, SessionID: "s1"}
	if id != "" {
		h.Properties = map[string]interface{}{wire.PropConnectionID: id}
	}
	return &wire.ProtoMsg{Header: h, Body: body}
}

func echoServer(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						_, _ = c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func TestEchoAndStrayMessages(t *testing.T) {
	port := echoServer(t)
	p := New(Options{Window: 2})
	out := make(chanSender, 100)
	s := p.Open("s1", out)
	defer s.Close()

	// A stray ack before anything, and messages for unknown connections.
	for _, typ := range []string{TypeAck, TypeForward, TypeStop} {
		s.Handle(pfMsg(typ, "nope", []byte("x")))
		if got := errText(t, recv(t, out, TypeError)); got != ErrTextUnknownConn {
			t.Fatalf("%s for an unknown connection: %q", typ, got)
		}
	}
	s.Handle(pfMsg("bogus", "c1", nil))
	if got := errText(t, recv(t, out, TypeError)); got != ErrTextUnknownType {
		t.Fatalf("unknown type: %q", got)
	}

	s.Handle(newMsg(t, "c1", "tcp", "127.0.0.1", port))
	// Data sent before the device answered new (mender-cli does that).
	s.Handle(pfMsg(TypeForward, "c1", []byte("hello")))
	recv(t, out, TypeNew)
	if m := recvAckAndForward(t, out); string(m.Body) != "hello" {
		t.Fatalf("echo %q", m.Body)
	}
	// Duplicate and stray acks are ignored; the connection keeps working.
	for i := 0; i < 5; i++ {
		s.Handle(pfMsg(TypeAck, "c1", nil))
	}
	s.Handle(pfMsg(TypeForward, "c1", []byte("again")))
	if m := recvAckAndForward(t, out); string(m.Body) != "again" {
		t.Fatalf("echo %q", m.Body)
	}
	s.Handle(pfMsg(TypeStop, "c1", nil))
	recv(t, out, TypeStop)
	s.Handle(pfMsg(TypeForward, "c1", []byte("late")))
	if got := errText(t, recv(t, out, TypeError)); got != ErrTextUnknownConn {
		t.Fatalf("forward after stop: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Active() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if p.Active() != 0 {
		t.Fatalf("%d connections still open", p.Active())
	}
}

func TestNewRejections(t *testing.T) {
	rules, err := ParseAllow([]string{"tcp/127.0.0.1:1-1000"})
	if err != nil {
		t.Fatal(err)
	}
	p := New(Options{Allow: rules, MaxPerSession: 1, MaxTotal: 2})
	out := make(chanSender, 100)
	s := p.Open("s1", out)
	defer s.Close()
	port := echoServer(t)
	allowAll := New(Options{MaxPerSession: 1, MaxTotal: 1})
	s2 := allowAll.Open("s2", out)
	defer s2.Close()
	s2.Handle(newMsg(t, "a", "tcp", "127.0.0.1", port))
	recv(t, out, TypeNew)

	for _, tc := range []struct {
		name string
		s    interface{ Handle(*wire.ProtoMsg) }
		msg  *wire.ProtoMsg
		want string
	}{
		{"missing fields", s, pfMsg(TypeNew, "x", nil), ErrTextInvalid},
		{"no connection id", s, newMsg(t, "", "tcp", "127.0.0.1", 22), ErrTextInvalid},
		{"bad protocol", s, newMsg(t, "x", "sctp", "127.0.0.1", 22), "unknown protocol: sctp"},
		{"denied port", s, newMsg(t, "x", "tcp", "127.0.0.1", 2000), "access denied: tcp/127.0.0.1:2000 is not in PortForward.Allow"},
		{"denied proto", s, newMsg(t, "y", "udp", "127.0.0.1", 53), "access denied: udp/127.0.0.1:53 is not in PortForward.Allow"},
		{"denied v6", s, newMsg(t, "z", "tcp", "::1", 22), "access denied: tcp/[::1]:22 is not in PortForward.Allow"},
		{"session limit", s2, newMsg(t, "b", "tcp", "127.0.0.1", port), "too many port-forward connections in this session (limit 1)"},
	} {
		tc.s.Handle(tc.msg)
		if got := errText(t, recv(t, out, TypeError)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	s3 := allowAll.Open("s3", out)
	defer s3.Close()
	s3.Handle(newMsg(t, "c", "tcp", "127.0.0.1", port))
	if got := errText(t, recv(t, out, TypeError)); got != "too many port-forward connections on the device (limit 1)" {
		t.Errorf("total limit: %q", got)
	}
}

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok      bool
		network string
		host    string
		port    int
		match   bool
	}{
		{"127.0.0.1:22", true, "tcp", "127.0.0.1", 22, true},
		{"tcp/127.0.0.0/8:*", true, "udp", "127.1.2.3", 9, false},
		{"udp/[::1]:53", true, "udp", "::1", 53, true},
		{"[fd00::/8]:1000-2000", true, "tcp", "fd12::1", 1500, true},
		{"[fd00::/8]:1000-2000", true, "tcp", "fd12::1", 2001, false},
		{"10.0.0.0/8:80", true, "tcp", "11.0.0.1", 80, false},
		{"localhost:8080", true, "tcp", "LOCALHOST", 8080, true},
		{"127.0.0.1", false, "", "", 0, false},
		{"127.0.0.1:0", false, "", "", 0, false},
		{"127.0.0.1:9-3", false, "", "", 0, false},
		{"10.0.0.0/33:1", false, "", "", 0, false},
	} {
		r, err := ParseRule(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: error %v", tc.in, err)
			continue
		}
		if !tc.ok {
			continue
		}
		a := &acl{rules: []Rule{r}}
		var got bool
		if ip, err := netipParse(tc.host); err == nil {
			got = a.allowsAddr(tc.network, ip, uint16(tc.port))
		} else {
			got = a.allowsName(tc.network, tc.host, uint16(tc.port))
		}
		if got != tc.match {
			t.Errorf("%q against %s/%s: %v", tc.in, tc.network, net.JoinHostPort(tc.host, strconv.Itoa(tc.port)), got)
		}
	}
}

func netipParse(s string) (netip.Addr, error) { return netip.ParseAddr(s) }
