package itest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// tlsMock is what a test knows of a mock server that serves TLS with a
// self-signed certificate, as `mock-mender serve --tls-self-signed` does.
type tlsMock struct {
	certPath string
	pool     *x509.CertPool // built from the file on disk
	spki     string         // base64 SHA-256 of the certificate's public key
}

// newTLSEnv is newEnv against a mock server that serves HTTPS/WSS only,
// with a certificate written by mockserver.WriteSelfSigned. With trust the
// daemon is given that file as Link.CAFile; without it the daemon has
// the system's roots only. Users log in with newTLSEnv's own client (the
// mock's Login trusts the system's roots only).
func newTLSEnv(t *testing.T, overrides map[string]interface{}, trust bool) (*env, tlsMock) {
	t.Helper()
	var m tlsMock
	e := newEnvWith(t, overrides, func(e *env) {
		// The plain server of newEnv goes; one that speaks TLS only
		// takes its place before the daemon starts.
		_ = e.srv.Close()
		cert, certPath, err := mockserver.WriteSelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		_, spki, err := mockserver.CertificateFingerprints(cert)
		if err != nil {
			t.Fatal(err)
		}
		pemBytes, err := os.ReadFile(certPath)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			t.Fatalf("no certificate in %s", certPath)
		}
		m = tlsMock{certPath: certPath, pool: pool, spki: spki}
		srv := mockserver.New(mockserver.Options{SigningKey: signingKey, Users: users,
			Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
		url, err := srv.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		e.srv, e.url, e.addr = srv, url, strings.TrimPrefix(url, "https://")
		e.auth.Set(srv.IssueDeviceToken(e.deviceID), url)
		link := map[string]interface{}{}
		if l, ok := e.cfg["Link"].(map[string]interface{}); ok {
			for k, v := range l {
				link[k] = v
			}
		}
		if trust {
			link["CAFile"] = certPath
		}
		e.cfg["Link"] = link
	})
	return e, m
}

// wssTerminal is a user's terminal over wss:// that trusts the mock's
// certificate.
type wssTerminal struct {
	t    *testing.T
	conn *websocket.Conn
	sid  string
}

func (m tlsMock) login(t *testing.T, e *env, email string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: m.pool}}}
	req, err := http.NewRequestWithContext(e.ctx, http.MethodPost, e.url+mockserver.LoginPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(email, users[email])
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("login over https: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login over https: %d %s", resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b))
}

// open starts a shell as mender-cli does, over wss://.
func (m tlsMock) open(t *testing.T, e *env, email string) *wssTerminal {
	t.Helper()
	d := &websocket.Dialer{HandshakeTimeout: 15 * time.Second, TLSClientConfig: &tls.Config{RootCAs: m.pool}}
	u := "wss://" + e.addr + mockserver.DeviceConnectMgmtDir + e.deviceID + "/connect"
	conn, _, err := d.DialContext(e.ctx, u, http.Header{"Authorization": {"Bearer " + m.login(t, e, email)}})
	if err != nil {
		t.Fatalf("management websocket over wss: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	term := &wssTerminal{t: t, conn: conn}
	term.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew,
		Properties: map[string]interface{}{wire.PropTerminalWidth: 80, wire.PropTerminalHeight: 24}}})
	reply := term.next(wire.ShellNew)
	if st, _ := reply.Header.IntProp(wire.PropStatus); st != wire.StatusNormal {
		t.Fatalf("shell refused: %v %q", reply.Header.Properties, reply.Body)
	}
	term.sid = reply.Header.SessionID
	return term
}

func (w *wssTerminal) send(m *wire.ProtoMsg) {
	w.t.Helper()
	b, err := wire.Marshal(m)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
		w.t.Fatal(err)
	}
}

// next returns the device's next shell message of type typ, answering its
// pings on the way.
func (w *wssTerminal) next(typ string) *wire.ProtoMsg {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, b, err := w.conn.ReadMessage()
		if err != nil {
			w.t.Fatalf("waiting for shell %s: %v", typ, err)
		}
		m, err := wire.Unmarshal(b)
		if err != nil {
			w.t.Fatal(err)
		}
		if m.Header.Proto != wire.ProtoShell {
			continue
		}
		if m.Header.MsgType == wire.ShellPing && typ != wire.ShellPing {
			w.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellPong, SessionID: m.Header.SessionID}})
			continue
		}
		if m.Header.MsgType == typ {
			return m
		}
	}
}

// expect waits for substr in the shell's output.
func (w *wssTerminal) expect(substr string) {
	w.t.Helper()
	var out strings.Builder
	for !strings.Contains(out.String(), substr) {
		out.Write(w.next(wire.ShellData).Body)
	}
}

// The real daemon against the mock over TLS: it trusts the self-signed
// certificate through Link.CAFile, and a user's terminal over wss:// gets
// shell output. Without the file the daemon refuses the server: TLS is
// verified, never bypassed.
func TestDaemonAgainstTLSMock(t *testing.T) {
	t.Run("trusted through Link.CAFile", func(t *testing.T) {
		e, m := newTLSEnv(t, nil, true)
		e.waitDevice()
		term := m.open(t, e, adminEmail)
		term.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellData, SessionID: term.sid},
			Body: []byte("echo tls-$((6*7))\n")})
		term.expect("tls-42")
	})
	t.Run("not trusted", func(t *testing.T) {
		e, _ := newTLSEnv(t, nil, false)
		eventually(t, 15*time.Second, "a logged certificate error", func() bool {
			return strings.Contains(e.log.String(), "certificate signed by unknown authority")
		})
		if n := e.srv.DeviceConnects(e.deviceID); n != 0 {
			t.Fatalf("the daemon connected %d times to a server it must not trust", n)
		}
	})
}

// The web console over https in a real Chromium that trusts just this
// certificate (by its public key hash, not a blanket ignore): the page's
// terminal speaks wss:// to its own host, as the Mender UI's code does.
func TestBrowserConsoleTLS(t *testing.T) {
	e, m := newTLSEnv(t, nil, true)
	e.waitDevice()
	ctx := newBrowser(t, e.ctx, chromedp.Flag("ignore-certificate-errors-spki-list", m.spki))
	link, err := e.srv.LoginLink(adminEmail)
	if err != nil {
		t.Fatal(err)
	}
	var proto string
	browse(t, ctx, "log in over https",
		chromedp.Navigate(e.url+link),
		chromedp.WaitVisible(fmt.Sprintf(`.device[data-device=%q][data-status="connected"] button.launch:not([disabled])`, e.deviceID), chromedp.ByQuery),
		chromedp.Evaluate(`location.protocol`, &proto))
	if proto != "https:" {
		t.Fatalf("page loaded over %q", proto)
	}
	term := launch(t, ctx, e.deviceID)
	term.waitState("connected")
	term.typeKeys("echo wss-$((6*7))\n")
	term.waitLine("wss-42")
}
