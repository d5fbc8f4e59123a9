package mockserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

// testLog sends server logs to the test log, so a failure shows them.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// startServer starts a server on loopback and closes it at cleanup.
func startServer(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	if opts.Log == nil {
		tl := &testLog{t: t}
		opts.Log = slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: slog.LevelDebug}))
		t.Cleanup(func() {
			tl.mu.Lock()
			tl.done = true
			tl.mu.Unlock()
		})
	}
	s := New(opts)
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return s, url
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wsURL(baseURL, path string) string {
	return "ws" + strings.TrimPrefix(baseURL, "http") + path
}

// dialDevice dials the device endpoint with a bearer token (if not "").
func dialDevice(ctx context.Context, baseURL, token string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	if hdr == nil {
		hdr = http.Header{}
	}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	return websocket.DefaultDialer.DialContext(ctx, wsURL(baseURL, DeviceConnectPath), hdr)
}

// fakeDevice is a minimal device: it answers shell `new` with `new`
// status 1 (or 2 with refuse), echoes `shell` data, answers `stop` with
// `stop` status 1, and records everything it receives.
type fakeDevice struct {
	conn   *websocket.Conn
	recv   chan *wire.ProtoMsg
	raw    chan []byte
	done   chan struct{}
	refuse string

	writeMu sync.Mutex
}

func startFakeDevice(t testing.TB, baseURL, token string) *fakeDevice {
	t.Helper()
	return startFakeDeviceWith(t, baseURL, token, "")
}

func startFakeDeviceWith(t testing.TB, baseURL, token, refuse string) *fakeDevice {
	t.Helper()
	conn, resp, err := dialDevice(testCtx(t), baseURL, token, nil)
	if err != nil {
		t.Fatalf("fake device dial: %v (response %v)", err, resp)
	}
	fd := &fakeDevice{
		conn:   conn,
		recv:   make(chan *wire.ProtoMsg, 1024),
		raw:    make(chan []byte, 1024),
		done:   make(chan struct{}),
		refuse: refuse,
	}
	go fd.loop()
	t.Cleanup(fd.close)
	return fd
}

func (fd *fakeDevice) close() {
	_ = fd.conn.Close()
	<-fd.done
}

func (fd *fakeDevice) loop() {
	defer close(fd.done)
	for {
		_, data, err := fd.conn.ReadMessage()
		if err != nil {
			return
		}
		select {
		case fd.raw <- data:
		default:
		}
		m, err := wire.Unmarshal(data)
		if err != nil {
			continue
		}
		select {
		case fd.recv <- m:
		default:
		}
		if m.Header.Proto != wire.ProtoShell {
			continue
		}
		sid := m.Header.SessionID
		switch m.Header.MsgType {
		case wire.ShellNew:
			if fd.refuse != "" {
				_ = fd.send(shellMsg(wire.ShellNew, sid, wire.StatusError, fd.refuse))
			} else {
				_ = fd.send(shellMsg(wire.ShellNew, sid, wire.StatusNormal, "Shell started"))
			}
		case wire.ShellData:
			_ = fd.send(shellMsg(wire.ShellData, sid, wire.StatusNormal, string(m.Body)))
		case wire.ShellStop:
			_ = fd.send(shellMsg(wire.ShellStop, sid, wire.StatusNormal, ""))
		}
	}
}

func (fd *fakeDevice) send(m *wire.ProtoMsg) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	return fd.sendRaw(websocket.BinaryMessage, b)
}

func (fd *fakeDevice) sendRaw(typ int, b []byte) error {
	fd.writeMu.Lock()
	defer fd.writeMu.Unlock()
	return fd.conn.WriteMessage(typ, b)
}

// waitFor returns the first received message matching match.
func (fd *fakeDevice) waitFor(t testing.TB, what string, match func(*wire.ProtoMsg) bool) *wire.ProtoMsg {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-fd.recv:
			if match(m) {
				return m
			}
		case <-timeout:
			t.Fatalf("fake device: no %s within 5 s", what)
			return nil
		}
	}
}

func shellMsg(typ, sid string, status int, body string) *wire.ProtoMsg {
	m := &wire.ProtoMsg{Header: wire.Header{
		Proto: wire.ProtoShell, MsgType: typ, SessionID: sid,
		Properties: map[string]interface{}{wire.PropStatus: status},
	}}
	if body != "" {
		m.Body = []byte(body)
	}
	return m
}

func isShell(typ string) func(*wire.ProtoMsg) bool {
	return func(m *wire.ProtoMsg) bool {
		return m.Header.Proto == wire.ProtoShell && m.Header.MsgType == typ
	}
}

// login logs in as the default user.
func login(t testing.TB, baseURL string) string {
	t.Helper()
	tok, err := Login(testCtx(t), baseURL, DefaultUser, DefaultPassword)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// httpDo makes a request and returns status, content type and body.
func httpDo(t testing.TB, method, url string, body io.Reader, hdr http.Header) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}
