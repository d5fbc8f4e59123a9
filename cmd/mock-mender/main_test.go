package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mock-mender")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startServe runs "mock-mender serve" and returns the URL it prints.
func startServe(t *testing.T, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Stderr = &syncbuf.Buffer{}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("serve stderr:\n%s", cmd.Stderr.(*syncbuf.Buffer).String())
		}
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case url := <-line:
		if !strings.HasPrefix(url, "http://127.0.0.1:") {
			t.Fatalf("serve printed %q", url)
		}
		return cmd, url
	case <-time.After(10 * time.Second):
		t.Fatal("serve printed no URL")
		return nil, ""
	}
}

func stopServe(t *testing.T, cmd *exec.Cmd, sig os.Signal) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after %v", err, sig)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not exit on %v", sig)
	}
}

// deviceAuth authenticates like a device and returns its token.
func deviceAuth(t *testing.T, url string) string {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	body, _ := json.Marshal(mockserver.AuthRequest{
		IDData: `{"mac":"52:54:00:00:00:01"}`,
		PubKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	})
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, url+mockserver.AuthRequestsPath, bytes.NewReader(body))
	req.Header.Set(mockserver.SignatureHeader, base64.StdEncoding.EncodeToString(ed25519.Sign(key, body)))
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tok, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("auth request: %d %s", resp.StatusCode, tok)
	}
	return string(tok)
}

func TestServeLoginDevicesRestart(t *testing.T) {
	bin := buildBinary(t)
	keyFile := filepath.Join(t.TempDir(), "key")
	cmd, url := startServe(t, bin, "--users", "ops@x:s3cret,dev@x:pw", "--key-file", keyFile, "--log-level", "debug")
	ctx := testCtx(t)

	userTok, err := mockserver.Login(ctx, url, "ops@x", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	var he *mockserver.HTTPError
	if _, err := mockserver.Login(ctx, url, "ops@x", "wrong"); !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad password: %v", err)
	}
	devTok := deviceAuth(t, url)
	devID, _ := mockserver.DeviceID(`{"mac":"52:54:00:00:00:01"}`)

	out, err := exec.Command(bin, "devices", "--server", url, "--user", "dev@x", "--password", "pw").CombinedOutput()
	if err != nil || !strings.Contains(string(out), devID) || !strings.Contains(string(out), "disconnected") {
		t.Fatalf("devices: %v\n%s", err, out)
	}
	stopServe(t, cmd, syscall.SIGTERM)
	if info, err := os.Stat(keyFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}

	// Restarted with the same key file, the old tokens still work.
	cmd, url = startServe(t, bin, "--users", "ops@x:s3cret", "--key-file", keyFile)
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(url, "http")+mockserver.DeviceConnectPath,
		http.Header{"Authorization": {"Bearer " + devTok}})
	if err != nil {
		t.Fatalf("device token after restart: %v", err)
	}
	defer conn.Close()
	if st, err := mockserver.DeviceStatus(ctx, url, userTok, devID); err != nil || st != "connected" {
		t.Fatalf("user token after restart: %q %v", st, err)
	}
	env := exec.Command(bin, "devices")
	env.Env = append(os.Environ(), envServer+"="+url, envUser+"=ops@x", envPassword+"=s3cret")
	if out, err := env.CombinedOutput(); err != nil || !strings.Contains(string(out), devID+"  accepted  connected") {
		t.Fatalf("devices from env: %v\n%s", err, out)
	}
	stopServe(t, cmd, syscall.SIGINT)
}

func TestServeRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--users", "nocolon"},
		{"serve", "--log-level", "loud"},
		{"serve", "--session-byte-limit", "0"},
		{"serve", "extra"},
		{"nonsense"},
		{},
	} {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, nil, io.Discard, &stderr); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// echoDevice is a minimal device: `new` → `new` status 1, data echoed,
// everything received recorded.
type echoDevice struct {
	conn *websocket.Conn
	recv chan *wire.ProtoMsg
	mu   sync.Mutex
	// refuse, when set, is the text of a status-2 reply to shell new.
	refuse string
}

func startEchoDevice(t *testing.T, url, token string) *echoDevice {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.DialContext(testCtx(t), "ws"+strings.TrimPrefix(url, "http")+mockserver.DeviceConnectPath,
		http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	d := &echoDevice{conn: conn, recv: make(chan *wire.ProtoMsg, 256)}
	done := make(chan struct{})
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
			d.recv <- m
			switch m.Header.MsgType {
			case wire.ShellNew:
				d.mu.Lock()
				refuse := d.refuse
				d.mu.Unlock()
				if refuse != "" {
					d.send(wire.ShellNew, m.Header.SessionID, wire.StatusError, refuse)
					continue
				}
				d.send(wire.ShellNew, m.Header.SessionID, wire.StatusNormal, "Shell started")
			case wire.ShellData:
				d.send(wire.ShellData, m.Header.SessionID, wire.StatusNormal, string(m.Body))
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return d
}

func (d *echoDevice) send(typ, sid string, status int, body string) {
	b, _ := wire.Marshal(&wire.ProtoMsg{
		Header: wire.Header{Proto: wire.ProtoShell, MsgType: typ, SessionID: sid, Properties: map[string]interface{}{wire.PropStatus: status}},
		Body:   []byte(body),
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = d.conn.WriteMessage(websocket.BinaryMessage, b)
}

func (d *echoDevice) waitFor(t *testing.T, typ string) *wire.ProtoMsg {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-d.recv:
			if m.Header.Proto == wire.ProtoShell && m.Header.MsgType == typ {
				return m
			}
		case <-timeout:
			t.Fatalf("device got no %s", typ)
			return nil
		}
	}
}

// waitOutput waits until b holds substr.
func waitOutput(t *testing.T, b *syncbuf.Buffer, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("output has no %q: %q", substr, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAttachOnPty(t *testing.T) {
	bin := buildBinary(t)
	// Lenient, so that the device hears "user disconnected" when "~."
	// closes the connection (the real server would tell it nothing).
	s := mockserver.New(mockserver.Options{Lenient: true})
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	dev := startEchoDevice(t, url, s.IssueDeviceToken("dev-tty"))
	if _, err := s.WaitDevice(testCtx(t), "dev-tty"); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "attach", "--server", url)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 100, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out syncbuf.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(&out, tty)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	nw := dev.waitFor(t, wire.ShellNew)
	if w, _ := nw.Header.IntProp(wire.PropTerminalWidth); w != 100 {
		t.Errorf("terminal_width %d, want 100", w)
	}
	if h, _ := nw.Header.IntProp(wire.PropTerminalHeight); h != 30 {
		t.Errorf("terminal_height %d, want 30", h)
	}
	// Raw mode: bytes pass untranslated, nothing is echoed locally.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&(unix.ECHO|unix.ICANON) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("terminal not in raw mode")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := tty.Write([]byte("hi~there\r")); err != nil {
		t.Fatal(err)
	}
	if in := dev.waitFor(t, wire.ShellData); string(in.Body) != "hi~there\r" {
		t.Errorf("device got %q", in.Body)
	}
	waitOutput(t, &out, "hi~there\r")

	if err := pty.Setsize(tty, &pty.Winsize{Cols: 132, Rows: 50}); err != nil {
		t.Fatal(err)
	}
	rs := dev.waitFor(t, wire.ShellResize)
	if w, _ := rs.Header.IntProp(wire.PropTerminalWidth); w != 132 {
		t.Errorf("resize width %d", w)
	}
	if h, _ := rs.Header.IntProp(wire.PropTerminalHeight); h != 50 {
		t.Errorf("resize height %d", h)
	}

	if _, err := tty.Write([]byte("~.")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("attach exited with %v; output %q", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("attach did not exit on ~.")
	}
	if stop := dev.waitFor(t, wire.ShellStop); string(stop.Body) != mockserver.StopUserDisconnected {
		t.Errorf("device stop %q", stop.Body)
	}
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&unix.ECHO == 0 || tio.Lflag&unix.ICANON == 0 {
		t.Error("terminal settings not restored")
	}
	tty.Close()
	<-copied
	if !strings.Contains(out.String(), "[disconnected]") {
		t.Errorf("output %q", out.String())
	}
}

func TestAttachWithoutTtyEndsOnDeviceStop(t *testing.T) {
	bin := buildBinary(t)
	s := mockserver.New(mockserver.Options{})
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	// No device at all: a clear error.
	if out, err := exec.Command(bin, "attach", "--server", url).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "no device known") {
		t.Fatalf("attach without devices: %v %s", err, out)
	}

	dev := startEchoDevice(t, url, s.IssueDeviceToken("dev-pipe"))
	if _, err := s.WaitDevice(testCtx(t), "dev-pipe"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "attach", "dev-pipe")
	cmd.Env = append(os.Environ(), envServer+"="+url)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	nw := dev.waitFor(t, wire.ShellNew)
	if w, _ := nw.Header.IntProp(wire.PropTerminalWidth); w != 80 {
		t.Errorf("default width %d", w)
	}
	if _, err := io.WriteString(stdin, "ls\n"); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &out, "ls\n")
	dev.send(wire.ShellStop, nw.Header.SessionID, wire.StatusError, "read /dev/ptmx: input/output error")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("attach: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("attach did not exit on the device's stop")
	}
	if !strings.Contains(out.String(), "\r\n[shell stopped: read /dev/ptmx: input/output error]\r\n") {
		t.Errorf("output %q", out.String())
	}
}

// A refused terminal is reported as refused, with the device's text, and
// attach fails: through the server's relay, read as mender-cli reads it.
func TestAttachReportsRefusal(t *testing.T) {
	bin := buildBinary(t)
	s := mockserver.New(mockserver.Options{})
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	dev := startEchoDevice(t, url, s.IssueDeviceToken("dev-full"))
	dev.mu.Lock()
	dev.refuse = "user has too many open sessions"
	dev.mu.Unlock()
	if _, err := s.WaitDevice(testCtx(t), "dev-full"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testCtx(t), bin, "attach", "--server", url, "dev-full")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("attach to a refusing device exited 0; output %q", out)
	}
	if !strings.Contains(string(out), "user has too many open sessions") {
		t.Fatalf("attach output %q lacks the device's refusal", out)
	}
}

func TestEscaper(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
		quit   bool
	}{
		{"plain", []string{"ls\r"}, "ls\r", false},
		{"disconnect at start", []string{"~."}, "", true},
		{"disconnect after newline", []string{"ls\r~.rest"}, "ls\r", true},
		{"disconnect split over reads", []string{"ls\n~", "."}, "ls\n", true},
		{"tilde mid-line", []string{"a~.b"}, "a~.b", false},
		{"double tilde", []string{"~~."}, "~.", false},
		{"tilde then other", []string{"~x"}, "~x", false},
		{"tilde then newline", []string{"~\r~."}, "~\r", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := escaper{atLineStart: true}
			var got []byte
			quit := false
			for _, c := range tc.chunks {
				out, q := e.feed([]byte(c))
				got = append(got, out...)
				if q {
					quit = true
					break
				}
			}
			if string(got) != tc.want || quit != tc.quit {
				t.Errorf("got %q quit=%v, want %q quit=%v", got, quit, tc.want, tc.quit)
			}
		})
	}
}

func TestPickDevice(t *testing.T) {
	a := mockserver.RemoteDevice{ID: "a", Connected: true}
	b := mockserver.RemoteDevice{ID: "b", Connected: true}
	c := mockserver.RemoteDevice{ID: "c"}
	tests := []struct {
		name    string
		devs    []mockserver.RemoteDevice
		want    string
		wantErr string
	}{
		{"one connected", []mockserver.RemoteDevice{a, c}, "a", ""},
		{"several", []mockserver.RemoteDevice{a, b, c}, "", "several devices are connected, name one: a, b"},
		{"none connected", []mockserver.RemoteDevice{c}, "", "no device is connected (known: c)"},
		{"none", nil, "", "no device known to the server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickDevice(tc.devs)
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
				t.Errorf("got %q %v, want %q %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
