package portforward

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/confval"
)

// Protocol.Close ends the connections of sessions nobody closed (the
// package's leak check sees their goroutines gone); a session opened
// afterwards dials nothing.
func TestProtocolCloseEndsEverything(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := New(Options{})
	out := make(chanSender, 64)
	s := p.Open("s1", out)
	s.Handle(newMsg(t, "c1", ProtoTCP, "127.0.0.1", ln.Addr().(*net.TCPAddr).Port))
	dst, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	recv(t, out, TypeNew)

	p.Close()
	if n := p.Active(); n != 0 {
		t.Errorf("%d connections open after Close", n)
	}
	_ = dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := dst.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("destination after Close: %v, want EOF", err)
	}

	late := p.Open("s2", out)
	late.Handle(newMsg(t, "c2", ProtoTCP, "127.0.0.1", ln.Addr().(*net.TCPAddr).Port))
	if n := p.Active(); n != 0 {
		t.Errorf("a session opened after Close took %d connections", n)
	}
	late.Close()
}

// The section's defaults are valid, and FromConfig refuses what Validate
// refuses.
func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultConfig()
	c.Allow = []string{"tcp/127.0.0.1"}
	c.Window = 0
	c.DialTimeout = confval.Duration(0)
	var keys []string
	confval.Each(c.Validate(), func(key, _ string) { keys = append(keys, key) })
	if len(keys) != 3 {
		t.Errorf("problems with %v, want Window, DialTimeout and Allow", keys)
	}
	if _, err := FromConfig(c, Deps{}); err == nil {
		t.Error("FromConfig accepted a malformed allow rule")
	}
}
