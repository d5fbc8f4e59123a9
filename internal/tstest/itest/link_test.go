package itest

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/wire"
)

func TestTokenRotationReconnectsWithNewToken(t *testing.T) {
	e := newEnv(t, nil)
	d1 := e.waitDevice()
	newTok := e.srv.IssueDeviceToken(e.deviceID) + "" // a fresh jti makes it differ
	if newTok == d1.Token() {
		t.Fatal("test needs a different token")
	}
	e.auth.Set(newTok, e.url)
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	d2, err := e.srv.WaitReconnect(ctx, d1)
	if err != nil {
		t.Fatalf("no reconnect after rotation: %v", err)
	}
	if d2.Token() != newTok {
		t.Fatal("reconnected with the old token")
	}
	e.run(e.open(adminEmail), "true")
}

func TestTokenClearedStopsShells(t *testing.T) {
	e := newEnv(t, nil)
	d := e.waitDevice()
	term := e.open(adminEmail)
	e.run(term, "(exec sleep 312) &")
	e.auth.Clear()
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("link not closed after the token was cleared")
	}
	eventually(t, 5*time.Second, "shells stopped", func() bool {
		live, zombies := e.children()
		return len(live) == 0 && len(zombies) == 0 && !processExists("sleep 312")
	})
	// A new token brings the device back.
	e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), e.url)
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if _, err := e.srv.WaitReconnect(ctx, d); err != nil {
		t.Fatalf("no reconnect with the new token: %v", err)
	}
}

func TestUnauthorizedFetchesNewToken(t *testing.T) {
	e := newEnv(t, nil)
	d := e.waitDevice()
	// The server revokes the token and drops the device: the reconnect
	// gets 401, so the daemon must ask the auth service for a new token.
	e.srv.RevokeDeviceTokens(e.deviceID)
	fetches := e.auth.FetchCount()
	d.Close()
	eventually(t, 10*time.Second, "FetchJwtToken after 401", func() bool { return e.auth.FetchCount() > fetches })
	e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), e.url)
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if _, err := e.srv.WaitReconnect(ctx, d); err != nil {
		t.Fatalf("no reconnect with the fetched token: %v", err)
	}
}

func TestServerRestartReconnects(t *testing.T) {
	e := newEnv(t, nil)
	d := e.waitDevice()
	addr := e.addr
	e.srv.Close()
	<-d.Done()
	time.Sleep(300 * time.Millisecond) // a few failed dials with backoff
	e.startServer(addr)
	e.waitDevice()
	e.run(e.open(adminEmail), "echo back")
}

func TestGarbageFramesKeepLinkUp(t *testing.T) {
	e := newEnv(t, nil)
	d := e.waitDevice()
	term := e.open(adminEmail)
	e.run(term, "true")
	frames, cancel := d.Subscribe()
	defer cancel()

	enc := func(v interface{}) []byte {
		var buf bytes.Buffer
		en := msgpack.NewEncoder(&buf)
		en.SetSortMapKeys(true)
		if err := en.Encode(v); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	valid := wire.AppendShellOutput(nil, "garbage-sid", []byte("x"))
	garbage := []struct {
		name  string
		typ   int
		frame []byte
		sid   string // a control error must come back to this sid
	}{
		{"not msgpack", websocket.BinaryMessage, []byte("\xc1\xc1 definitely not msgpack"), ""},
		{"text frame", websocket.TextMessage, []byte("hello device"), ""},
		{"scalar", websocket.BinaryMessage, enc(42), ""},
		{"truncated", websocket.BinaryMessage, valid[:len(valid)-2], "garbage-sid"},
		{"empty", websocket.BinaryMessage, nil, ""},
		{"missing header", websocket.BinaryMessage, enc(map[string]interface{}{"body": []byte("x")}), ""},
		{"wrong field types", websocket.BinaryMessage, enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": "one", "sid": "typed-sid", "typ": 5}}), "typed-sid"},
		{"oversized", websocket.BinaryMessage, bytes.Repeat([]byte{0x90}, 2<<20), ""},
		{"unknown proto", websocket.BinaryMessage, enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": 77, "sid": "proto-sid", "typ": "x"}}), "proto-sid"},
		{"deep nesting", websocket.BinaryMessage, append([]byte("\x81\xa3hdr\x82\xa5proto\x01\xa5props\x81\xa1a"), bytes.Repeat([]byte{0x91}, 1<<16)...), ""},
	}
	for _, g := range garbage {
		if err := d.SendRaw(g.typ, g.frame); err != nil {
			t.Fatalf("%s: send: %v", g.name, err)
		}
		if g.sid != "" {
			waitControlError(t, frames, g.sid)
		}
		// The link is the same one and other sessions keep working.
		e.run(term, "echo ok-after-"+strings.ReplaceAll(g.name, " ", "-"))
	}
	if n := e.srv.DeviceConnects(e.deviceID); n != 1 {
		t.Fatalf("device reconnected %d times: garbage dropped the link", n-1)
	}
	select {
	case <-d.Done():
		t.Fatal("link dropped")
	default:
	}
}

func waitControlError(t *testing.T, frames <-chan *wire.ProtoMsg, sid string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-frames:
			if m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypeError && m.Header.SessionID == sid {
				var body wire.ErrorBody
				if err := wire.DecodeBody(m.Body, &body); err != nil {
					t.Fatalf("control error body: %v", err)
				}
				if body.Error == "" || body.Close {
					t.Fatalf("control error for %s: %+v", sid, body)
				}
				return
			}
		case <-timeout:
			t.Fatalf("no control error for sid %s", sid)
		}
	}
}

func TestControlProtocolAndUnknownMessages(t *testing.T) {
	e := newEnv(t, nil)
	d := e.waitDevice()
	frames, cancel := d.Subscribe()
	defer cancel()
	expect := func(what string, ok func(m *wire.ProtoMsg) bool) *wire.ProtoMsg {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case m := <-frames:
				if ok(m) {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		}
	}
	open, _ := wire.EncodeBody(wire.OpenBody{Versions: []int{1}})
	if err := d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen, SessionID: "c1"}, Body: open}); err != nil {
		t.Fatal(err)
	}
	m := expect("accept", func(m *wire.ProtoMsg) bool { return m.Header.MsgType == wire.TypeAccept && m.Header.SessionID == "c1" })
	var acc wire.AcceptBody
	if err := wire.DecodeBody(m.Body, &acc); err != nil || acc.Version != 1 || !slices.Equal(acc.Protocols, []uint16{wire.ProtoShell, wire.ProtoFileTransfer, wire.ProtoPortForward, wire.ProtoMenderClient}) {
		t.Fatalf("accept %+v %v", acc, err)
	}
	_ = d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePing, SessionID: "c1"}})
	expect("pong", func(m *wire.ProtoMsg) bool { return m.Header.MsgType == wire.TypePong && m.Header.SessionID == "c1" })

	bad, _ := wire.EncodeBody(wire.OpenBody{Versions: []int{2}})
	_ = d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen, SessionID: "c2"}, Body: bad})
	m = expect("handshake rejection", func(m *wire.ProtoMsg) bool { return m.Header.MsgType == wire.TypeError && m.Header.SessionID == "c2" })
	var eb wire.ErrorBody
	if err := wire.DecodeBody(m.Body, &eb); err != nil || eb.Error != "handshake rejected: require version 1" || !eb.Close {
		t.Fatalf("rejection %+v %v", eb, err)
	}

	_ = d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: 7, MsgType: "new", SessionID: "c3",
		Properties: map[string]interface{}{"msgid": "m-9"}}})
	m = expect("no handler", func(m *wire.ProtoMsg) bool { return m.Header.MsgType == wire.TypeError && m.Header.SessionID == "c3" })
	eb = wire.ErrorBody{}
	if err := wire.DecodeBody(m.Body, &eb); err != nil || eb.Error != "no handler registered for protocol: 0x0007" ||
		eb.Close || eb.MessageProto != 7 || eb.MessageType != "new" || eb.MessageID != "m-9" {
		t.Fatalf("no-handler error %+v %v", eb, err)
	}

	_ = d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: "dance", SessionID: "s4"}})
	m = expect("unknown shell echo", func(m *wire.ProtoMsg) bool { return m.Header.MsgType == "dance" && m.Header.SessionID == "s4" })
	if st, _ := m.Header.IntProp(wire.PropStatus); st != wire.StatusError || string(m.Body) != "unknown message protocol and type: 1/dance" {
		t.Fatalf("unknown shell echo %+v %q", m.Header, m.Body)
	}
	_ = d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellStop, SessionID: "nope"}})
	m = expect("stop error", func(m *wire.ProtoMsg) bool { return m.Header.MsgType == wire.ShellStop && m.Header.SessionID == "nope" })
	if string(m.Body) != "routeMessage: StopShellMessage: session not found for id nope" {
		t.Fatalf("stop for unknown sid: %q", m.Body)
	}
	_ = d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellData, SessionID: "nope"}, Body: []byte("ls\n")})
	m = expect("session not found", func(m *wire.ProtoMsg) bool { return m.Header.MsgType == wire.ShellData && m.Header.SessionID == "nope" })
	if string(m.Body) != "session not found" {
		t.Fatalf("data for unknown sid: %q", m.Body)
	}
}

func TestGracefulShutdown(t *testing.T) {
	// The jobs ignore HUP and TERM, so the shutdown takes two graces:
	// the configured grace holds on shutdown too (it was an eighth of a
	// fixed budget).
	//
	// The upper bound leaves 4 s for the rest of the shutdown (signal
	// delivery, the stop notices, closing the link, the exit of a -race
	// binary, whose runtime sleeps 1 s at exit): on a loaded 2-core run
	// that took up to 2.5 s, and 1.5 s failed now and then. It still fails a shutdown that waits out
	// shell.KillWait (5 s) for shells already killed, or that tears the
	// three sessions down one after another (six graces, 6 s), long
	// before systemd's TimeoutStopSec (30 s) would.
	const (
		grace = time.Second
		slack = 4 * time.Second
	)
	e := newEnv(t, map[string]interface{}{"Sessions": map[string]interface{}{"MaxPerUser": 4, "StopGrace": grace.String()}})
	e.waitDevice()
	terms := []interface {
		WaitStop(context.Context) (*wire.ProtoMsg, error)
	}{}
	for i := 0; i < 3; i++ {
		term := e.open(adminEmail)
		e.run(term, "(trap '' HUP TERM; exec sleep 313) &")
		terms = append(terms, term)
	}
	took := e.stopDaemon()
	t.Logf("shutdown took %v", took)
	if took < 2*grace || took > 2*grace+slack {
		t.Fatalf("shutdown took %v, want two graces of %v (+ up to %v)", took, grace, slack)
	}
	if code := e.daemon.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, term := range terms {
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
		m, err := term.WaitStop(ctx)
		cancel()
		if err != nil {
			t.Fatalf("peer not told: %v", err)
		}
		if !strings.Contains(string(m.Body), "shutting down") {
			t.Fatalf("stop body %q", m.Body)
		}
	}
	// The daemon has exited, so its shells were killed already; the
	// wait only covers a slow /proc on a loaded machine.
	eventually(t, 10*time.Second, "shells gone", func() bool { return !processExists("sleep 313") })
}
