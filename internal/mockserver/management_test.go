package mockserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

func TestRelay(t *testing.T) {
	s, url := startServer(t, Options{})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-1"))
	if _, err := s.WaitDevice(testCtx(t), "dev-1"); err != nil {
		t.Fatal(err)
	}
	userTok := login(t, url)
	wantUser := UserID(DefaultUser)
	ctx := testCtx(t)

	term, err := OpenTerminal(ctx, url, userTok, "dev-1", 120, 40)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	sid := term.SID()
	if !uuidRE.MatchString(sid) {
		t.Fatalf("sid %q is not a fresh UUID", sid)
	}
	newMsg := fd.waitFor(t, "shell new", isShell(wire.ShellNew))
	if newMsg.Header.SessionID != sid || newMsg.Header.StringProp(wire.PropUserID) != wantUser {
		t.Errorf("device got new %+v, want sid %s user %s", newMsg.Header, sid, wantUser)
	}
	if w, _ := newMsg.Header.IntProp(wire.PropTerminalWidth); w != 120 {
		t.Errorf("terminal_width %d", w)
	}
	if h, _ := newMsg.Header.IntProp(wire.PropTerminalHeight); h != 40 {
		t.Errorf("terminal_height %d", h)
	}

	// Input reaches the device with sid and user_id; the echo comes back.
	if _, err := term.Write([]byte("echo hello\r")); err != nil {
		t.Fatal(err)
	}
	in := fd.waitFor(t, "shell data", isShell(wire.ShellData))
	if in.Header.SessionID != sid || in.Header.StringProp(wire.PropUserID) != wantUser || string(in.Body) != "echo hello\r" {
		t.Errorf("device got %+v %q", in.Header, in.Body)
	}
	if out, err := term.Expect(ctx, "hello"); err != nil || out != "echo hello" {
		t.Fatalf("Expect: %q %v", out, err)
	}
	if out, err := term.Expect(ctx, "\r"); err != nil || out != "\r" {
		t.Fatalf("Expect rest: %q %v", out, err)
	}

	// Whatever sid the user writes, the device sees the connection's.
	err = term.Send(&wire.ProtoMsg{Header: wire.Header{
		Proto: wire.ProtoShell, MsgType: wire.ShellResize, SessionID: "forged",
		Properties: map[string]interface{}{wire.PropTerminalWidth: 100, wire.PropTerminalHeight: 30, wire.PropUserID: "mallory"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	rs := fd.waitFor(t, "resize", isShell(wire.ShellResize))
	if rs.Header.SessionID != sid || rs.Header.StringProp(wire.PropUserID) != wantUser {
		t.Errorf("resize arrived as %+v", rs.Header)
	}

	// A second user connection gets its own sid; device messages are
	// routed by sid and dropped when no session has it.
	term2, err := OpenTerminal(ctx, url, userTok, "dev-1", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer term2.Close()
	if term2.SID() == sid {
		t.Fatal("two user connections share a sid")
	}
	if err := fd.send(shellMsg(wire.ShellData, "unknown-sid", 1, "lost")); err != nil {
		t.Fatal(err)
	}
	if err := fd.send(shellMsg(wire.ShellData, term2.SID(), 1, "for-two")); err != nil {
		t.Fatal(err)
	}
	if err := fd.send(shellMsg(wire.ShellData, sid, 1, "for-one")); err != nil {
		t.Fatal(err)
	}
	if out, err := term.Expect(ctx, "for-one"); err != nil || out != "for-one" {
		t.Errorf("terminal 1 got %q (%v): foreign output leaked", out, err)
	}
	if out, err := term2.Expect(ctx, "for-two"); err != nil || out != "for-two" {
		t.Errorf("terminal 2 got %q (%v)", out, err)
	}

	// The user going away without a stop tells the device nothing, as
	// from the real server (TestUserLeavingTellsDeviceNothing).
	if err := term.Close(); err != nil {
		t.Fatal(err)
	}
	assertNoShellStop(t, fd, 200*time.Millisecond)
	if !errors.Is(term.Err(), ErrTerminalClosed) {
		t.Errorf("Err after Close: %v", term.Err())
	}

	// Stop from the user: the device answers and the server does not add
	// "user disconnected" afterwards.
	if err := term2.Stop(); err != nil {
		t.Fatal(err)
	}
	reply, err := term2.WaitStop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := reply.Header.IntProp(wire.PropStatus); st != wire.StatusNormal {
		t.Errorf("stop reply status %d", st)
	}
	fd.waitFor(t, "user stop", isShell(wire.ShellStop))
	term2.Close()
	assertNoShellStop(t, fd, 200*time.Millisecond)
}

func assertNoShellStop(t *testing.T, fd *fakeDevice, wait time.Duration) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-fd.recv:
			if isShell(wire.ShellStop)(m) {
				t.Fatalf("unexpected stop %+v %q", m.Header, m.Body)
			}
		case <-deadline:
			return
		}
	}
}

func TestUserWithoutShellSendsNoStop(t *testing.T) {
	s, url := startServer(t, Options{})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-2"))
	d, _ := s.WaitDevice(testCtx(t), "")
	term, err := Dial(testCtx(t), url, login(t, url), "dev-2")
	if err != nil {
		t.Fatal(err)
	}
	// A control message goes through with sid and user_id; the reply
	// routes back and teaches the Terminal its sid.
	if err := term.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePing}}); err != nil {
		t.Fatal(err)
	}
	ping := fd.waitFor(t, "control ping", func(m *wire.ProtoMsg) bool { return m.Header.Proto == wire.ProtoControl })
	if ping.Header.SessionID == "" || ping.Header.StringProp(wire.PropUserID) == "" {
		t.Fatalf("control message not rewritten: %+v", ping.Header)
	}
	pong := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePong, SessionID: ping.Header.SessionID}}
	if err := fd.send(pong); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-term.Messages():
		if m.Header.MsgType != wire.TypePong || term.SID() != ping.Header.SessionID {
			t.Errorf("got %+v, sid %q", m.Header, term.SID())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	term.Close()
	assertNoShellStop(t, fd, 200*time.Millisecond)
	_ = d
}

func TestUndecodableUserMessageEndsSession(t *testing.T) {
	s, url := startServer(t, Options{})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-3"))
	if _, err := s.WaitDevice(testCtx(t), ""); err != nil {
		t.Fatal(err)
	}
	term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-3", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	// The web UI's stop carries a map body, which the server cannot decode.
	if err := term.conn.WriteMessage(websocket.BinaryMessage, []byte("\x82\xa3hdr\x82\xa5proto\x01\xa3typ\xa4stop\xa4body\x80")); err != nil {
		t.Fatal(err)
	}
	if _, err := term.WaitStop(testCtx(t)); err == nil {
		t.Error("terminal still open")
	}
	// The real server tells the device nothing when a user session ends
	// without the user's own stop.
	assertNoShellStop(t, fd, 200*time.Millisecond)
}

func TestDeviceDisconnectClosesUsers(t *testing.T) {
	s, url := startServer(t, Options{})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-4"))
	d, _ := s.WaitDevice(testCtx(t), "")
	userTok := login(t, url)
	term, err := OpenTerminal(testCtx(t), url, userTok, "dev-4", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	idle, err := Dial(testCtx(t), url, userTok, "dev-4")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	// As the real server: every user socket is closed with 1011 and
	// nobody gets a stop (TestLinkDropEndsUserSessions goes further).
	fd.close()
	<-d.Done()
	for name, tm := range map[string]*Terminal{"terminal": term, "idle": idle} {
		for m := range tm.Messages() {
			if isShell(wire.ShellStop)(m) {
				t.Errorf("%s got a stop %q", name, m.Body)
			}
		}
		var ce *websocket.CloseError
		if !errors.As(tm.Err(), &ce) || ce.Code != websocket.CloseInternalServerErr {
			t.Errorf("%s ended with %v, want close 1011", name, tm.Err())
		}
	}
	if st, err := DeviceStatus(testCtx(t), url, userTok, "dev-4"); err != nil || st != "disconnected" {
		t.Errorf("status %q %v", st, err)
	}
}

func TestSessionByteLimit(t *testing.T) {
	s, url := startServer(t, Options{SessionByteLimit: 100})
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-5"))
	if _, err := s.WaitDevice(testCtx(t), ""); err != nil {
		t.Fatal(err)
	}
	term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-5", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	chunk := strings.Repeat("a", 59) + "|"
	for i := 0; i < 3; i++ {
		if _, err := term.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	// 60 + 60 bytes are forwarded (the total was below 100 before each);
	// the third output finds 120 recorded and ends the session.
	stop := fd.waitFor(t, "byte-limit stop", isShell(wire.ShellStop))
	st, _ := stop.Header.IntProp(wire.PropStatus)
	if string(stop.Body) != StopByteLimit || st != wire.StatusError || stop.Header.SessionID != term.SID() ||
		stop.Header.StringProp(wire.PropUserID) != UserID(DefaultUser) {
		t.Errorf("stop %+v %q", stop.Header, stop.Body)
	}
	// The closed user socket adds no "user disconnected".
	assertNoShellStop(t, fd, 200*time.Millisecond)
	var out strings.Builder
	for m := range term.Messages() {
		if isShell(wire.ShellData)(m) {
			out.Write(m.Body)
		}
	}
	var ce *websocket.CloseError
	if !errors.As(term.Err(), &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != CloseByteLimitText {
		t.Fatalf("terminal ended with %v, want close 1008", term.Err())
	}
	if out := out.String(); out != chunk+chunk {
		t.Errorf("user saw %d bytes %q, want 120", len(out), out)
	}
}

func TestOpenTerminalRefused(t *testing.T) {
	s, url := startServer(t, Options{})
	startFakeDeviceWith(t, url, s.IssueDeviceToken("dev-6"), "user has too many open sessions")
	if _, err := s.WaitDevice(testCtx(t), ""); err != nil {
		t.Fatal(err)
	}
	_, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-6", 80, 24)
	var se *ShellError
	if !errors.As(err, &se) || err.Error() != "user has too many open sessions" {
		t.Fatalf("err %v", err)
	}
}

func TestManagementAPI(t *testing.T) {
	s, url := startServer(t, Options{Users: map[string]string{"a@x": "pa", "b@x": "pb"}})
	ctx := testCtx(t)

	for _, tc := range []struct {
		name, email, password string
		ok                    bool
	}{
		{"user a", "a@x", "pa", true},
		{"user b", "b@x", "pb", true},
		{"wrong password", "a@x", "pb", false},
		{"unknown user", "c@x", "pa", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Login(ctx, url, tc.email, tc.password)
			if tc.ok != (err == nil) {
				t.Fatalf("login: %v", err)
			}
			if !tc.ok {
				var he *HTTPError
				if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
					t.Fatalf("err %v, want 401", err)
				}
				return
			}
			c, err := verifyToken(s.key, tok, time.Now())
			if err != nil || !c.User || c.Subject != UserID(tc.email) {
				t.Fatalf("token claims %+v %v", c, err)
			}
		})
	}
	status, _, body := httpDo(t, http.MethodPost, url+LoginPath, nil, nil)
	if status != http.StatusUnauthorized || !strings.Contains(body, `"error"`) {
		t.Errorf("login without basic auth: %d %s", status, body)
	}

	userTok, err := Login(ctx, url, "a@x", "pa")
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	devTok := authenticateDevice(t, url, `{"mac":"00:11:22:33:44:55"}`, key)
	devID, _ := DeviceID(`{"mac":"00:11:22:33:44:55"}`)
	s.IssueDeviceToken("dev-b")

	devs, err := ListDevices(ctx, url, userTok)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].Status != "accepted" || devs[0].Connected || devs[1].Connected {
		t.Fatalf("devices %+v", devs)
	}
	var found bool
	for _, d := range devs {
		if d.ID == devID {
			found = d.IdentityData["mac"] == "00:11:22:33:44:55"
		}
	}
	if !found {
		t.Errorf("device %s with identity missing from %+v", devID, devs)
	}
	status, _, body = httpDo(t, http.MethodGet, url+DevicesPath+"?page=2&per_page=1", nil, http.Header{"Authorization": {"Bearer " + userTok}})
	if status != http.StatusOK || strings.Count(body, `"id"`) != 1 {
		t.Errorf("page 2: %d %s", status, body)
	}
	status, _, _ = httpDo(t, http.MethodGet, url+DevicesPath+"?per_page=0", nil, http.Header{"Authorization": {"Bearer " + userTok}})
	if status != http.StatusBadRequest {
		t.Errorf("per_page=0: %d", status)
	}

	startFakeDevice(t, url, devTok)
	if _, err := s.WaitDevice(ctx, devID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id         string
		wantStatus string
		wantCode   int
	}{
		{devID, "connected", 0},
		{"dev-b", "disconnected", 0},
		{"nope", "", http.StatusNotFound},
	} {
		st, err := DeviceStatus(ctx, url, userTok, tc.id)
		var he *HTTPError
		if tc.wantCode != 0 {
			if !errors.As(err, &he) || he.StatusCode != tc.wantCode {
				t.Errorf("status of %s: %v, want HTTP %d", tc.id, err, tc.wantCode)
			}
			continue
		}
		if err != nil || st != tc.wantStatus {
			t.Errorf("status of %s: %q %v, want %q", tc.id, st, err, tc.wantStatus)
		}
	}

	// The management endpoints want a user token.
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"list without token", DevicesPath, "", http.StatusUnauthorized},
		{"list with device token", DevicesPath, devTok, http.StatusUnauthorized},
		{"status with device token", DeviceConnectMgmtDir + devID, devTok, http.StatusUnauthorized},
		{"connect with device token", DeviceConnectMgmtDir + devID + "/connect", devTok, http.StatusUnauthorized},
		{"connect unknown device", DeviceConnectMgmtDir + "nope/connect", userTok, http.StatusNotFound},
		{"connect disconnected device", DeviceConnectMgmtDir + "dev-b/connect", userTok, http.StatusConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.token != "" {
				hdr.Set("Authorization", "Bearer "+tc.token)
			}
			status, ctype, body := httpDo(t, http.MethodGet, url+tc.path, nil, hdr)
			if status != tc.want || !strings.HasPrefix(ctype, "application/json") || !strings.Contains(body, `"error"`) {
				t.Errorf("%d %s %s, want %d", status, ctype, body, tc.want)
			}
		})
	}
	var he *HTTPError
	if _, err := OpenTerminal(ctx, url, userTok, "dev-b", 80, 24); !errors.As(err, &he) || he.StatusCode != http.StatusConflict {
		t.Errorf("terminal to a disconnected device: %v", err)
	}
	// The JWT cookie works for users too.
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL(url, DeviceConnectMgmtDir+devID+"/connect"),
		http.Header{"Cookie": {"JWT=" + userTok}})
	if err != nil {
		t.Fatalf("user connect with cookie: %v", err)
	}
	conn.Close()
}

func TestRestartWithSameKeyKeepsTokens(t *testing.T) {
	key := []byte("restart-key-restart-key-restart!")
	s1 := New(Options{SigningKey: key})
	url1, err := s1.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, devKey, _ := ed25519.GenerateKey(rand.Reader)
	const idData = `{"mac":"aa:bb:cc:dd:ee:ff"}`
	devTok := authenticateDevice(t, url1, idData, devKey)
	userTok := login(t, url1)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2, url2 := startServer(t, Options{SigningKey: key})
	startFakeDevice(t, url2, devTok)
	d, err := s2.WaitDevice(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := DeviceID(idData); d.ID() != want {
		t.Errorf("device id %s after restart, want %s", d.ID(), want)
	}
	if devs, err := ListDevices(testCtx(t), url2, userTok); err != nil || len(devs) != 1 || !devs[0].Connected {
		t.Fatalf("old user token on the new server: %+v %v", devs, err)
	}
	// Re-authentication gives the same id.
	if tok := authenticateDevice(t, url2, idData, devKey); tok == devTok {
		t.Error("same token issued twice")
	}
	if n := len(s2.deviceList()); n != 1 {
		t.Errorf("%d devices after re-authentication", n)
	}

	// A different key invalidates everything.
	s3, url3 := startServer(t, Options{})
	_, resp, _ := dialDevice(testCtx(t), url3, devTok, nil)
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token of another key: %v", resp)
	}
	_ = s3
}

// A client that saw its 101 must find the server agreeing at once: known,
// connected, reachable by users.
func TestConnectedAsSoonAsAccepted(t *testing.T) {
	s, url := startServer(t, Options{})
	userTok := login(t, url)
	for i := 0; i < 20; i++ {
		id := "dev-fast-" + string(rune('a'+i))
		conn, _, err := dialDevice(testCtx(t), url, s.IssueDeviceToken(id), nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.DeviceConnects(id) != 1 {
			t.Fatalf("%s not counted", id)
		}
		if st, err := DeviceStatus(testCtx(t), url, userTok, id); err != nil || st != "connected" {
			t.Fatalf("%s: status %q %v right after the handshake", id, st, err)
		}
		term, err := Dial(testCtx(t), url, userTok, id)
		if err != nil {
			t.Fatalf("%s: user connect right after the handshake: %v", id, err)
		}
		term.Close()
		conn.Close()
	}
}

func TestTerminalAutoPong(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []TerminalOption
		wantPong bool
	}{
		{"answers shell pings", nil, true},
		{"WithoutAutoPong", []TerminalOption{WithoutAutoPong()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, url := startServer(t, Options{})
			fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-ping"))
			if _, err := s.WaitDevice(testCtx(t), ""); err != nil {
				t.Fatal(err)
			}
			term, err := OpenTerminal(testCtx(t), url, login(t, url), "dev-ping", 80, 24, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer term.Close()
			ping := shellMsg(wire.ShellPing, term.SID(), wire.StatusControl, "")
			ping.Header.Properties[wire.PropTimeout] = 65
			if err := fd.send(ping); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-term.Messages():
				if !isShell(wire.ShellPing)(m) {
					t.Fatalf("terminal got %+v", m.Header)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("ping not relayed")
			}
			// The echo of a marker shows that anything sent before it
			// has been seen by the device.
			if _, err := term.Write([]byte("marker")); err != nil {
				t.Fatal(err)
			}
			var gotPong bool
			for {
				m := fd.waitFor(t, "marker", func(*wire.ProtoMsg) bool { return true })
				if isShell(wire.ShellPong)(m) {
					gotPong = true
					if m.Header.SessionID != term.SID() || m.Header.StringProp(wire.PropUserID) == "" {
						t.Errorf("pong %+v", m.Header)
					}
				}
				if isShell(wire.ShellData)(m) {
					break
				}
			}
			if gotPong != tc.wantPong {
				t.Errorf("pong sent: %v, want %v", gotPong, tc.wantPong)
			}
		})
	}
}

func TestUserPingsAndReadTimeout(t *testing.T) {
	s, url := startServer(t, Options{UserPingInterval: 20 * time.Millisecond, DevicePingInterval: 20 * time.Millisecond, ReadTimeout: 300 * time.Millisecond})
	startFakeDevice(t, url, s.IssueDeviceToken("dev-up"))
	if _, err := s.WaitDevice(testCtx(t), ""); err != nil {
		t.Fatal(err)
	}
	userTok := login(t, url)
	dial := func() *websocket.Conn {
		conn, _, err := websocket.DefaultDialer.DialContext(testCtx(t), wsURL(url, DeviceConnectMgmtDir+"dev-up/connect"),
			http.Header{"Authorization": {"Bearer " + userTok}})
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}

	// A user that answers pings (gorilla's default) stays connected.
	conn := dial()
	defer conn.Close()
	pings := make(chan string, 100)
	conn.SetPingHandler(func(p string) error {
		select {
		case pings <- p:
		default:
		}
		return conn.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(time.Second))
	})
	readErr := make(chan error, 1)
	go func() {
		_, _, err := conn.ReadMessage()
		readErr <- err
	}()
	select {
	case p := <-pings:
		if p != "60" {
			t.Errorf("ping payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ping to the user")
	}
	select {
	case err := <-readErr:
		t.Fatalf("user answering pings was dropped: %v", err)
	case <-time.After(600 * time.Millisecond):
	}

	// One that reads nothing (so never answers) is dropped.
	silent := dial()
	defer silent.Close()
	time.Sleep(600 * time.Millisecond)
	silent.SetPingHandler(func(string) error { return nil })
	if err := silent.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := silent.ReadMessage(); err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("silent user not dropped by the server")
			}
			break
		}
	}
}
