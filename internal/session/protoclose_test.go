package session

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/proto/filetransfer"
	"github.com/tether-agent/tether/internal/proto/menderclient"
	"github.com/tether-agent/tether/internal/proto/portforward"
	"github.com/tether-agent/tether/internal/tstest/leakcheck"
	"github.com/tether-agent/tether/internal/wire"
)

// TestShutdownWaitsForProtocols: every goroutine a protocol starts has an
// owner that waits for it. With port-forward connections open to a
// destination that says nothing and uploads waiting for their chunks,
// the router's Shutdown returns only once the protocols' goroutines have
// ended: none is left the moment it returns, and no upload's temporary
// file. (Without the wait the goroutines end a moment later, so a round
// may pass by luck; twenty rounds of four sessions do not.)
func TestShutdownWaitsForProtocols(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for round := range 20 {
		shutdownRound(t, ln, round, 4)
		if t.Failed() {
			return
		}
	}
}

// unwaited is every goroutine but those an owner has waited for that are
// still on their way out: one whose only frame is the wrapper that
// signalled its end (a proto.Group's, or Shutdown's own waiter), or the
// runtime's exit, has nothing left to do but return.
func unwaited() []string {
	var out []string
	for _, g := range leakcheck.Stacks() {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		var frames []string
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "created by ") && !strings.HasPrefix(l, "runtime.goexit") {
				frames = append(frames, l)
			}
		}
		if len(frames) == 0 || len(frames) == 1 && (strings.HasPrefix(frames[0], "github.com/tether-agent/tether/internal/proto.(*Group).Go.func1(") ||
			strings.HasPrefix(frames[0], "github.com/tether-agent/tether/internal/session.(*Router).Shutdown.func1(")) {
			continue
		}
		out = append(out, g)
	}
	return out
}

func shutdownRound(t *testing.T, ln net.Listener, round, sessions int) {
	dir := t.TempDir()
	ft, err := filetransfer.New(filetransfer.Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pf := portforward.New(portforward.Options{})
	mc := menderclient.New(menderclient.Options{Binaries: []string{filepath.Join(dir, "no-mender")}})
	r, m, w := controlRouter(t, ft, pf, mc)

	before := len(unwaited())
	accepted := make(chan []net.Conn)
	go func() { // ends before the count below: it sends what it accepted
		var cs []net.Conn
		for range sessions {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			cs = append(cs, c)
		}
		accepted <- cs
	}()

	host, port := "127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port)
	network := portforward.ProtoTCP
	for i := range sessions {
		sid := fmt.Sprintf("sid-%d-%d", round, i)
		r.HandleMessage(ctrl(wire.TypeOpen, sid, wire.OpenBody{Versions: []int{wire.ProtocolVersion}}))
		body, err := wire.EncodeBody(portforward.NewBody{RemoteHost: &host, RemotePort: &port, Protocol: &network})
		if err != nil {
			t.Fatal(err)
		}
		r.HandleMessage(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: portforward.TypeNew, SessionID: sid,
			Properties: map[string]interface{}{wire.PropConnectionID: "c1"}}, Body: body})
		path, size := filepath.Join(dir, fmt.Sprintf("upload-%d", i)), int64(1<<20)
		if body, err = wire.EncodeBody(wire.UploadBody{Path: &path, Size: &size}); err != nil {
			t.Fatal(err)
		}
		r.HandleMessage(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FilePut, SessionID: sid}, Body: body})
	}
	dsts := <-accepted
	defer func() {
		for _, c := range dsts {
			c.Close()
		}
	}()
	if len(dsts) != sessions {
		t.Fatalf("%d port-forward connections dialed, want %d", len(dsts), sessions)
	}
	// All are under way once the device has answered each: the
	// forward's `new`, the upload's first `ack`.
	deadline := time.Now().Add(10 * time.Second)
	for seen := map[uint16]int{}; seen[wire.ProtoPortForward] < sessions || seen[wire.ProtoFileTransfer] < sessions; {
		if time.Now().After(deadline) {
			t.Fatalf("not every protocol answered: %v", seen)
		}
		for _, f := range w.take(m) {
			seen[f.Header.Proto]++
		}
		time.Sleep(2 * time.Millisecond)
	}

	r.Shutdown(context.Background(), 0)
	if left := unwaited(); len(left) > before {
		t.Fatalf("round %d: Shutdown returned with protocol goroutines running: %d, %d before\n%s",
			round, len(left), before, strings.Join(left, "\n\n"))
	}
	left, _ := os.ReadDir(dir)
	for _, e := range left {
		if e.Name() != "no-mender" && e.Type().IsRegular() {
			t.Errorf("round %d: %s left in the upload directory after Shutdown", round, e.Name())
		}
	}
}
