package mockserver

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

// The real server's rules (PROTOCOL.md 2.9.1), each pinned here against
// the mock's default mode, and the Lenient mode that switches them off.

// endOf drains a terminal and returns its close error and any stop it got.
func endOf(t *testing.T, tm *Terminal) (*websocket.CloseError, []string) {
	t.Helper()
	var stops []string
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-tm.Messages():
			if !ok {
				var ce *websocket.CloseError
				if !errors.As(tm.Err(), &ce) {
					t.Fatalf("terminal ended with %v, not a close frame", tm.Err())
				}
				return ce, stops
			}
			if isShell(wire.ShellStop)(m) {
				stops = append(stops, string(m.Body))
			}
		case <-timeout:
			t.Fatal("terminal still open 5 s after the device link dropped")
		}
	}
}

// Rule a: a device link drop ends every user session of the device with
// 1011; nobody gets a stop; the device's next connection hears nothing of
// the old sids, and frames it sends for them reach nobody.
func TestLinkDropEndsUserSessions(t *testing.T) {
	for _, drop := range []string{"device socket ends", "server drops the device"} {
		t.Run(drop, func(t *testing.T) {
			s, url := startServer(t, Options{})
			tok := s.IssueDeviceToken("dev-a")
			fd := startFakeDevice(t, url, tok)
			d, err := s.WaitDevice(testCtx(t), "dev-a")
			if err != nil {
				t.Fatal(err)
			}
			userTok := login(t, url)
			term, err := OpenTerminal(testCtx(t), url, userTok, "dev-a", 80, 24)
			if err != nil {
				t.Fatal(err)
			}
			defer term.Close()
			idle, err := Dial(testCtx(t), url, userTok, "dev-a")
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			oldSID := term.SID()

			if drop == "server drops the device" {
				_ = d.Close()
			} else {
				fd.close()
			}
			<-d.Done()
			for name, tm := range map[string]*Terminal{"terminal": term, "idle": idle} {
				ce, stops := endOf(t, tm)
				if ce.Code != websocket.CloseInternalServerErr || len(stops) > 0 {
					t.Errorf("%s: close %d %q, stops %q; want 1011 and no stop", name, ce.Code, ce.Text, stops)
				}
			}

			fd2 := startFakeDevice(t, url, tok)
			if _, err := s.WaitReconnect(testCtx(t), d); err != nil {
				t.Fatal(err)
			}
			// A user of the new connection must not see the old sid's
			// output either.
			term2, err := OpenTerminal(testCtx(t), url, userTok, "dev-a", 80, 24)
			if err != nil {
				t.Fatal(err)
			}
			defer term2.Close()
			if term2.SID() == oldSID {
				t.Fatal("the new user connection got the old sid")
			}
			if err := fd2.send(shellMsg(wire.ShellData, oldSID, wire.StatusNormal, "for-the-old-sid")); err != nil {
				t.Fatal(err)
			}
			if err := fd2.send(shellMsg(wire.ShellData, term2.SID(), wire.StatusNormal, "for-two")); err != nil {
				t.Fatal(err)
			}
			if out, err := term2.Expect(testCtx(t), "for-two"); err != nil || out != "for-two" {
				t.Errorf("new terminal got %q (%v)", out, err)
			}
			assertNoShellStop(t, fd2, 200*time.Millisecond)
		})
	}
}

// Lenient: user sessions outlive a link drop; the same sid is relayed over
// the device's next connection both ways. Parked longer than ReadTimeout,
// the user gets "device disconnected" and 1001.
func TestLenientUserSessionsSurviveReconnect(t *testing.T) {
	s, url := startServer(t, Options{Lenient: true, ReadTimeout: 2 * time.Second, UserPingInterval: 200 * time.Millisecond})
	tok := s.IssueDeviceToken("dev-l")
	fd := startFakeDevice(t, url, tok)
	d, err := s.WaitDevice(testCtx(t), "dev-l")
	if err != nil {
		t.Fatal(err)
	}
	term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-l", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	sid := term.SID()
	fd.close()
	<-d.Done()
	fd2 := startFakeDevice(t, url, tok)
	d2, err := s.WaitReconnect(testCtx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	if err := fd2.send(shellMsg(wire.ShellData, sid, wire.StatusNormal, "after-reconnect")); err != nil {
		t.Fatal(err)
	}
	if out, err := term.Expect(testCtx(t), "after-reconnect"); err != nil || out != "after-reconnect" {
		t.Fatalf("user got %q (%v)", out, err)
	}
	if _, err := term.Write([]byte("typed")); err != nil {
		t.Fatal(err)
	}
	in := fd2.waitFor(t, "user input on the new connection", isShell(wire.ShellData))
	if in.Header.SessionID != sid || string(in.Body) != "typed" {
		t.Errorf("device got %+v %q", in.Header, in.Body)
	}
	if out, err := term.Expect(testCtx(t), "typed"); err != nil || out != "typed" {
		t.Fatalf("echo %q (%v)", out, err)
	}

	// The device stays away: after ReadTimeout the user is let go.
	start := time.Now()
	fd2.close()
	<-d2.Done()
	ce, stops := endOf(t, term)
	if ce.Code != websocket.CloseGoingAway || len(stops) != 1 || stops[0] != StopDeviceDisconnected {
		t.Errorf("close %d, stops %q; want 1001 after a stop %q", ce.Code, stops, StopDeviceDisconnected)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("parked session ended after %v, before ReadTimeout", el)
	}
}

// Rule b: one connection per device identity; the newest wins and the
// older one is dropped without a close frame (1006). Lenient sends 1011.
func TestNewestConnectionWins(t *testing.T) {
	for _, tt := range []struct {
		name    string
		lenient bool
		code    int
	}{{"real", false, websocket.CloseAbnormalClosure}, {"lenient", true, websocket.CloseInternalServerErr}} {
		t.Run(tt.name, func(t *testing.T) {
			s, url := startServer(t, Options{Lenient: tt.lenient})
			tok := s.IssueDeviceToken("dev-b")
			first, _, err := dialDevice(testCtx(t), url, tok, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			d1, err := s.WaitDevice(testCtx(t), "dev-b")
			if err != nil {
				t.Fatal(err)
			}
			read := make(chan error, 1)
			go func() {
				for {
					if _, _, err := first.ReadMessage(); err != nil {
						read <- err
						return
					}
				}
			}()
			second, _, err := dialDevice(testCtx(t), url, tok, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			d2, err := s.WaitReconnect(testCtx(t), d1)
			if err != nil {
				t.Fatal(err)
			}
			var ce *websocket.CloseError
			select {
			case err := <-read:
				if !errors.As(err, &ce) || ce.Code != tt.code {
					t.Fatalf("older connection ended with %v, want %d", err, tt.code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("older connection still open")
			}
			<-d1.Done()
			select {
			case <-d2.Done():
				t.Fatal("the newer connection was closed")
			default:
			}
		})
	}
}

// Rule c: pings every 30 s and a 60 s read deadline by default; both
// settable; any inbound frame resets the deadline, not only pongs.
func TestReadDeadlineResetByAnyFrame(t *testing.T) {
	def := New(Options{}).opts
	if def.DevicePingInterval != 30*time.Second || def.ReadTimeout != 60*time.Second {
		t.Fatalf("defaults: ping %v, read timeout %v; want 30s, 60s", def.DevicePingInterval, def.ReadTimeout)
	}
	s, url := startServer(t, Options{ReadTimeout: 400 * time.Millisecond, DevicePingInterval: 50 * time.Millisecond})
	conn, _, err := dialDevice(testCtx(t), url, s.IssueDeviceToken("dev-c"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pings := make(chan struct{}, 64)
	// The device counts pings but never answers them.
	conn.SetPingHandler(func(string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return nil
	})
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	d, err := s.WaitDevice(testCtx(t), "dev-c")
	if err != nil {
		t.Fatal(err)
	}
	frame, _ := wire.Marshal(shellMsg(wire.ShellData, "nobody", wire.StatusNormal, "x"))
	deadline := time.Now().Add(1500 * time.Millisecond)
	var quiet time.Time
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if err := conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			t.Fatalf("device dropped while sending frames: %v", err)
		}
		quiet = time.Now()
	}
	if n := len(pings); n < 5 {
		t.Errorf("%d pings in 1.5 s at a 50 ms interval", n)
	}
	select {
	case <-d.Done():
		t.Fatal("a device sending frames (but no pongs) was dropped")
	default:
	}
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("silent device not dropped")
	}
	if el := time.Since(quiet); el < 300*time.Millisecond {
		t.Errorf("dropped %v after the last frame, before the read timeout", el)
	}
	<-readErr
}

// Rule d: the byte-limit cut is on by default (8 MiB) and off in Lenient
// unless set. (TestSessionByteLimit pins the cut itself: the stop the
// device gets and the 1008 the user gets.)
func TestByteLimitDefaults(t *testing.T) {
	if got := New(Options{}).opts.SessionByteLimit; got != 8<<20 {
		t.Errorf("default SessionByteLimit %d, want 8 MiB", got)
	}
	if got := New(Options{Lenient: true}).opts.SessionByteLimit; got >= 0 {
		t.Errorf("lenient SessionByteLimit %d, want unlimited", got)
	}
	if got := New(Options{Lenient: true, SessionByteLimit: 10}).opts.SessionByteLimit; got != 10 {
		t.Errorf("lenient with a limit: %d, want 10", got)
	}
}

// Rule e: device frames for a sid no user holds are dropped silently: no
// user gets them, the device gets no answer and keeps its link.
func TestUnknownSIDDroppedSilently(t *testing.T) {
	s, url := startServer(t, Options{})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-e"))
	d, err := s.WaitDevice(testCtx(t), "dev-e")
	if err != nil {
		t.Fatal(err)
	}
	term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-e", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	fd.waitFor(t, "shell new", isShell(wire.ShellNew))
	for _, typ := range []string{wire.ShellData, wire.ShellPing, wire.ShellStop} {
		if err := fd.send(shellMsg(typ, "forgotten-sid", wire.StatusNormal, "lost")); err != nil {
			t.Fatal(err)
		}
	}
	if err := fd.send(shellMsg(wire.ShellData, term.SID(), wire.StatusNormal, "mine")); err != nil {
		t.Fatal(err)
	}
	if out, err := term.Expect(testCtx(t), "mine"); err != nil || out != "mine" {
		t.Errorf("user got %q (%v)", out, err)
	}
	select {
	case m := <-fd.recv:
		t.Errorf("device got an answer %+v %q", m.Header, m.Body)
	case <-time.After(200 * time.Millisecond):
	}
	select {
	case <-d.Done():
		t.Error("device link ended")
	default:
	}
}

// Rule f: a user whose websocket ends without a stop (closed, killed,
// undecodable) leaves the shell behind: the device hears nothing. Lenient
// sends "user disconnected".
func TestUserLeavingTellsDeviceNothing(t *testing.T) {
	for _, tt := range []struct {
		name    string
		lenient bool
		leave   func(*Terminal)
	}{
		{"closed", false, func(tm *Terminal) { _ = tm.Close() }},
		{"killed", false, func(tm *Terminal) { _ = tm.conn.Close() }},
		{"lenient closed", true, func(tm *Terminal) { _ = tm.Close() }},
		{"lenient killed", true, func(tm *Terminal) { _ = tm.conn.Close() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, url := startServer(t, Options{Lenient: tt.lenient})
			fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-f"))
			if _, err := s.WaitDevice(testCtx(t), "dev-f"); err != nil {
				t.Fatal(err)
			}
			term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-f", 80, 24)
			if err != nil {
				t.Fatal(err)
			}
			defer term.Close()
			sid := term.SID()
			fd.waitFor(t, "shell new", isShell(wire.ShellNew))
			tt.leave(term)
			if !tt.lenient {
				assertNoShellStop(t, fd, 300*time.Millisecond)
				return
			}
			stop := fd.waitFor(t, "user-disconnected stop", isShell(wire.ShellStop))
			st, _ := stop.Header.IntProp(wire.PropStatus)
			if stop.Header.SessionID != sid || st != wire.StatusError || string(stop.Body) != StopUserDisconnected ||
				stop.Header.StringProp(wire.PropUserID) != UserID(DefaultUser) {
				t.Errorf("stop %+v %q", stop.Header, stop.Body)
			}
		})
	}
}

// Rule g: a device frame above the NATS payload limit (1 MiB) kills the
// whole device link: the device and its users get 1011. One below passes.
// Lenient relays it.
func TestDeviceFrameAboveNATSLimit(t *testing.T) {
	if got := New(Options{}).opts.DeviceFrameLimit; got != 1<<20 {
		t.Fatalf("default DeviceFrameLimit %d, want 1 MiB", got)
	}
	for _, lenient := range []bool{false, true} {
		name := "real"
		if lenient {
			name = "lenient"
		}
		t.Run(name, func(t *testing.T) {
			s, url := startServer(t, Options{Lenient: lenient})
			fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-g"))
			d, err := s.WaitDevice(testCtx(t), "dev-g")
			if err != nil {
				t.Fatal(err)
			}
			term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-g", 80, 24)
			if err != nil {
				t.Fatal(err)
			}
			defer term.Close()
			small := strings.Repeat("s", 1<<20-1024) + "|end-small"
			if err := fd.send(shellMsg(wire.ShellData, term.SID(), wire.StatusNormal, small)); err != nil {
				t.Fatal(err)
			}
			if n, err := term.CountUntil(testCtx(t), "|end-small"); err != nil || n != int64(len(small)) {
				t.Fatalf("frame below the limit: %d bytes (%v)", n, err)
			}
			big := strings.Repeat("b", 1<<20) + "|end-big"
			if err := fd.send(shellMsg(wire.ShellData, term.SID(), wire.StatusNormal, big)); err != nil {
				t.Fatal(err)
			}
			if lenient {
				if n, err := term.CountUntil(testCtx(t), "|end-big"); err != nil || n != int64(len(big)) {
					t.Fatalf("lenient: %d bytes (%v)", n, err)
				}
				return
			}
			select {
			case <-d.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("device link survived a frame above 1 MiB")
			}
			<-fd.done
			var ce *websocket.CloseError
			if _, _, err := fd.conn.ReadMessage(); !errors.As(err, &ce) || ce.Code != websocket.CloseInternalServerErr {
				t.Errorf("device link ended with %v, want 1011", err)
			}
			if ce, _ := endOf(t, term); ce.Code != websocket.CloseInternalServerErr {
				t.Errorf("user closed with %d, want 1011", ce.Code)
			}
		})
	}
}

// ftErrorDevice is a device that accepts file transfer and answers every
// stat and put_file with an error whose body is body.
func ftErrorDevice(t *testing.T, url, token string, body map[string]interface{}) {
	t.Helper()
	conn, _, err := dialDevice(testCtx(t), url, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			m, err := wire.Unmarshal(data)
			if err != nil {
				continue
			}
			reply := &wire.ProtoMsg{Header: wire.Header{Proto: m.Header.Proto, SessionID: m.Header.SessionID}}
			switch {
			case m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypeOpen:
				reply.Header.MsgType = wire.TypeAccept
				reply.Body, _ = wire.EncodeBody(wire.AcceptBody{Version: 1, Protocols: []uint16{wire.ProtoFileTransfer}})
			case m.Header.Proto == wire.ProtoFileTransfer && (m.Header.MsgType == wire.FileStat || m.Header.MsgType == wire.FilePut):
				reply.Header.MsgType = wire.FileError
				reply.Body, _ = wire.EncodeBody(body)
			default:
				continue
			}
			b, _ := wire.Marshal(reply)
			if conn.WriteMessage(websocket.BinaryMessage, b) != nil {
				return
			}
		}
	}()
}

// Rule h: a device file-transfer error whose body has an integer code > 0
// (an HTTP status) becomes the status of the failed download or upload;
// without one it is 400.
func TestFileTransferErrorCode(t *testing.T) {
	for _, tt := range []struct {
		name string
		code interface{}
		want int
	}{
		{"not found", 404, 404},
		{"permission", int64(403), 403},
		{"too large", uint16(413), 413},
		{"conflict", int16(409), 409},
		{"success code", 200, 400},
		{"informational", 101, 400},
		{"no code", nil, 400},
		{"zero", 0, 400},
		{"negative", -404, 400},
		{"not a status", 42, 400},
		{"not an integer", "404", 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, url := startServer(t, Options{})
			body := map[string]interface{}{"err": "failed: " + tt.name}
			if tt.code != nil {
				body["code"] = tt.code
			}
			ftErrorDevice(t, url, s.IssueDeviceToken("dev-h"), body)
			if _, err := s.WaitDevice(testCtx(t), "dev-h"); err != nil {
				t.Fatal(err)
			}
			tok := login(t, url)
			_, derr := DownloadFile(testCtx(t), url, tok, "dev-h", "/some/file", io.Discard)
			uerr := UploadFile(testCtx(t), url, tok, "dev-h", "/some/file", "src", strings.NewReader("data"), nil, nil)
			for name, err := range map[string]error{"download": derr, "upload": uerr} {
				var he *HTTPError
				if !errors.As(err, &he) || he.StatusCode != tt.want || !strings.Contains(he.Message, "failed: "+tt.name) {
					t.Errorf("%s: %v, want HTTP %d with the device's text", name, err, tt.want)
				}
			}
		})
	}
}
