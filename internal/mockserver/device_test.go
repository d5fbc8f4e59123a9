package mockserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

func TestDeviceEndpointAuth(t *testing.T) {
	s, url := startServer(t, Options{})
	devTok := s.IssueDeviceToken("dev-a")
	userTok := login(t, url)
	s.mu.Lock()
	expired, _ := signToken(s.key, claims{Subject: "dev-a", Issuer: tokenIssuer, IssuedAt: 1, ExpiresAt: time.Now().Add(-time.Second).Unix(), ID: "x", Device: true})
	s.mu.Unlock()
	otherKey, _ := signToken([]byte("other"), claims{Subject: "dev-a", ExpiresAt: time.Now().Add(time.Hour).Unix(), Device: true})

	tests := []struct {
		name       string
		hdr        http.Header
		wantStatus int
		wantError  string
	}{
		{"no token", nil, http.StatusUnauthorized, ""},
		{"garbage token", http.Header{"Authorization": {"Bearer abc"}}, http.StatusUnauthorized, ""},
		{"basic scheme", http.Header{"Authorization": {"Basic " + devTok}}, http.StatusUnauthorized, ""},
		{"expired", http.Header{"Authorization": {"Bearer " + expired}}, http.StatusUnauthorized, ""},
		{"signed by another key", http.Header{"Authorization": {"Bearer " + otherKey}}, http.StatusUnauthorized, ""},
		{"user token", http.Header{"Authorization": {"Bearer " + userTok}}, http.StatusBadRequest,
			"missing or non-device identity in the authorization headers"},
		{"bearer", http.Header{"Authorization": {"Bearer " + devTok}}, http.StatusSwitchingProtocols, ""},
		{"lower-case scheme", http.Header{"Authorization": {"bearer " + devTok}}, http.StatusSwitchingProtocols, ""},
		{"cookie", http.Header{"Cookie": {"JWT=" + devTok}}, http.StatusSwitchingProtocols, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, resp, err := dialDevice(testCtx(t), url, "", tc.hdr.Clone())
			if resp == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (err %v)", resp.StatusCode, tc.wantStatus, err)
			}
			if conn != nil {
				if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" {
					t.Errorf("subprotocol %q echoed although not asked for", p)
				}
				conn.Close()
				return
			}
			var e struct{ Error string }
			if derr := json.NewDecoder(resp.Body).Decode(&e); derr != nil || e.Error == "" {
				t.Fatalf("error body is not JSON {error}: %v", derr)
			}
			if tc.wantError != "" && e.Error != tc.wantError {
				t.Errorf("error %q, want %q", e.Error, tc.wantError)
			}
		})
	}

	// Asked for, the subprotocol is echoed like the real server does.
	hdr := http.Header{"Sec-WebSocket-Protocol": {"protomsg/msgpack"}}
	conn, resp, err := dialDevice(testCtx(t), url, devTok, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "protomsg/msgpack" {
		t.Errorf("subprotocol %q, want protomsg/msgpack", p)
	}
}

func TestRevokeDeviceTokens(t *testing.T) {
	s, url := startServer(t, Options{})
	old := s.IssueDeviceToken("dev-r")
	fd := startFakeDevice(t, url, old)
	d, err := s.WaitDevice(testCtx(t), "dev-r")
	if err != nil {
		t.Fatal(err)
	}
	s.RevokeDeviceTokens("dev-r")
	fresh := s.IssueDeviceToken("dev-r") // same second as the revocation
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	<-fd.done

	_, resp, err := dialDevice(testCtx(t), url, old, nil)
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token: %v %v, want 401", resp, err)
	}
	conn, _, err := dialDevice(testCtx(t), url, fresh, nil)
	if err != nil {
		t.Fatalf("token issued after the revocation: %v", err)
	}
	conn.Close()
	if n := s.DeviceConnects("dev-r"); n != 2 {
		t.Errorf("DeviceConnects = %d, want 2", n)
	}
	// Other devices are unaffected.
	conn, _, err = dialDevice(testCtx(t), url, s.IssueDeviceToken("dev-other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestNewConnectionReplacesOld(t *testing.T) {
	s, url := startServer(t, Options{})
	tok := s.IssueDeviceToken("dev-x")
	fd1 := startFakeDevice(t, url, tok)
	d1, err := s.WaitDevice(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if d1.ID() != "dev-x" || d1.Token() != tok {
		t.Fatalf("device %q token match %v", d1.ID(), d1.Token() == tok)
	}
	startFakeDevice(t, url, tok)
	d2, err := s.WaitReconnect(testCtx(t), d1)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fd1.done:
	case <-time.After(5 * time.Second):
		t.Fatal("old connection not closed by the new one")
	}
	<-d1.Done()
	if d2 == d1 || s.DeviceConnects("dev-x") != 2 {
		t.Fatalf("connects %d", s.DeviceConnects("dev-x"))
	}
	if devs := s.deviceList(); len(devs) != 1 || !devs[0].Connected || devs[0].Connects != 2 {
		t.Errorf("devices %+v", devs)
	}
}

func TestSubscribeSendRawMalformed(t *testing.T) {
	s, url := startServer(t, Options{})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-s"))
	d, err := s.WaitDevice(testCtx(t), "dev-s")
	if err != nil {
		t.Fatal(err)
	}
	frames, cancel := d.Subscribe()

	// Server → device, raw and encoded.
	if err := d.SendRaw(websocket.TextMessage, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if got := <-fd.raw; string(got) != "garbage" {
		t.Errorf("device got %q", got)
	}
	ctl := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePing, SessionID: "s1"}}
	if err := d.Send(ctl); err != nil {
		t.Fatal(err)
	}
	fd.waitFor(t, "control ping", func(m *wire.ProtoMsg) bool { return m.Header.Proto == wire.ProtoControl })

	// Device → server: garbage is counted, decoded frames are published
	// even without a user session (which drops them).
	if err := fd.sendRaw(websocket.BinaryMessage, []byte{0xc1}); err != nil {
		t.Fatal(err)
	}
	if err := fd.send(shellMsg(wire.ShellData, "nobody", 1, "x")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-frames:
		if m.Header.SessionID != "nobody" || string(m.Body) != "x" {
			t.Errorf("subscriber got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber got nothing")
	}
	if n := d.malformedCount(); n != 1 {
		t.Errorf("Malformed = %d, want 1", n)
	}
	cancel()
	if _, ok := <-frames; ok {
		t.Error("channel open after cancel")
	}
	cancel() // idempotent

	// A subscriber that does not read is cut off instead of stalling.
	slow, cancelSlow := d.Subscribe()
	defer cancelSlow()
	fast, cancelFast := d.Subscribe()
	defer cancelFast()
	var got atomic.Int64
	fastDone := make(chan struct{})
	go func() {
		defer close(fastDone)
		for range fast {
			if got.Add(1) == SubscriptionBuffer+100 {
				return
			}
		}
	}()
	b, _ := wire.Marshal(shellMsg(wire.ShellData, "nobody", 1, "y"))
	for i := 0; i < SubscriptionBuffer+100; i++ {
		if err := fd.sendRaw(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-fastDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("reading subscriber got %d frames", got.Load())
	}
	n := 0
	for range slow {
		n++
	}
	if n != SubscriptionBuffer {
		t.Errorf("slow subscriber got %d frames before the cut, want %d", n, SubscriptionBuffer)
	}
}

func TestStrictClosesOnMalformed(t *testing.T) {
	s, url := startServer(t, Options{Strict: true})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-strict"))
	d, err := s.WaitDevice(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.sendRaw(websocket.BinaryMessage, []byte("nonsense")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("strict server kept the connection")
	}
	if d.malformedCount() != 1 {
		t.Errorf("Malformed = %d", d.malformedCount())
	}
}

func TestDevicePingsAndDeadlines(t *testing.T) {
	t.Run("server pings with payload 60 and answers pings", func(t *testing.T) {
		s, url := startServer(t, Options{DevicePingInterval: 30 * time.Millisecond})
		conn, _, err := dialDevice(testCtx(t), url, s.IssueDeviceToken("dev-p"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		pings := make(chan string, 16)
		conn.SetPingHandler(func(p string) error {
			select {
			case pings <- p:
			default:
			}
			return conn.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(time.Second))
		})
		pongs := make(chan string, 1)
		conn.SetPongHandler(func(p string) error {
			pongs <- p
			return nil
		})
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					return
				}
			}
		}()
		if err := conn.WriteControl(websocket.PingMessage, []byte("54"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		for _, want := range []struct {
			ch   chan string
			what string
			val  string
		}{{pings, "ping", "60"}, {pongs, "pong", "54"}} {
			select {
			case p := <-want.ch:
				if p != want.val {
					t.Errorf("%s payload %q, want %q", want.what, p, want.val)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no %s", want.what)
			}
		}
		conn.Close()
		<-readDone
	})
	t.Run("silent device is dropped after the read timeout", func(t *testing.T) {
		s, url := startServer(t, Options{ReadTimeout: 300 * time.Millisecond, DevicePingInterval: time.Hour})
		fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-q"))
		d, err := s.WaitDevice(testCtx(t), "")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		select {
		case <-d.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("silent device not dropped")
		}
		if el := time.Since(start); el < 200*time.Millisecond {
			t.Errorf("dropped after %v, before the timeout", el)
		}
		<-fd.done
	})
	t.Run("pongs keep a device alive", func(t *testing.T) {
		s, url := startServer(t, Options{ReadTimeout: 300 * time.Millisecond, DevicePingInterval: 50 * time.Millisecond})
		startFakeDevice(t, url, s.IssueDeviceToken("dev-k")) // gorilla answers pings by default
		d, err := s.WaitDevice(testCtx(t), "")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-d.Done():
			t.Fatal("device answering pings was dropped")
		case <-time.After(time.Second):
		}
	})
}

func TestWaitDeviceContext(t *testing.T) {
	s, _ := startServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.WaitDevice(ctx, "nobody"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = s.Close()
	}()
	if _, err := s.WaitDevice(context.Background(), "nobody"); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("err %v after Close", err)
	}
}

func TestUnknownPathsAnswerJSON(t *testing.T) {
	_, url := startServer(t, Options{})
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/nothing/here", http.StatusNotFound},
		{http.MethodGet, LoginPath, http.StatusMethodNotAllowed},
		{http.MethodPost, DeviceConnectPath, http.StatusMethodNotAllowed},
	} {
		status, ctype, body := httpDo(t, tc.method, url+tc.path, nil, nil)
		if status != tc.want || !strings.HasPrefix(ctype, "application/json") || !strings.Contains(body, `"error"`) {
			t.Errorf("%s %s: %d %s %s", tc.method, tc.path, status, ctype, body)
		}
	}
}
