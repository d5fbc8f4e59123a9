package mockserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

// startTLSServer serves over TLS with a certificate of WriteSelfSigned and
// returns the pool a client builds from the written file, as a user
// following the docs would.
func startTLSServer(t *testing.T, opts Options) (*Server, string, *x509.CertPool) {
	t.Helper()
	cert, certPath, err := WriteSelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	s, base := startServer(t, opts)
	if !strings.HasPrefix(base, "https://127.0.0.1:") {
		t.Fatalf("base URL %q", base)
	}
	return s, base, certPool(t, certPath)
}

func certPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no certificate", path)
	}
	return pool
}

func TestWriteSelfSigned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	// A symlink planted at the key's name is replaced, not written
	// through.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, SelfSignedKeyFile)); err != nil {
		t.Fatal(err)
	}
	cert, certPath, err := WriteSelfSigned(dir, []string{"localhost", "127.0.0.1", "::1", "Mock.Example.", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Fatalf("symlink target written: %q", b)
	}
	for name, want := range map[string]os.FileMode{SelfSignedCertFile: 0o644, SelfSignedKeyFile: 0o600} {
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want a regular file of %v", name, st.Mode(), want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("files left in %s: %v", dir, entries)
	}
	// The pair on disk loads, and is the certificate served.
	pair, err := tls.LoadX509KeyPair(certPath, filepath.Join(dir, SelfSignedKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pair.Certificate[0], cert.Certificate[0]) {
		t.Fatal("written certificate differs from the returned one")
	}
	leaf := cert.Leaf
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Error("the certificate must say it is not a CA")
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("extended key usage %v", leaf.ExtKeyUsage)
	}
	if !slices.Equal(leaf.DNSNames, []string{"localhost", "mock.example"}) || len(leaf.IPAddresses) != 2 {
		t.Errorf("names %v, addresses %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if d := time.Until(leaf.NotAfter); d < SelfSignedValidity-2*time.Hour || d > SelfSignedValidity {
		t.Errorf("valid for %v more", d)
	}
	// A second run makes a fresh certificate in place.
	again, _, err := WriteSelfSigned(dir, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(again.Certificate[0], cert.Certificate[0]) {
		t.Error("second run reused the certificate")
	}
	if _, err := SelfSignedCertificate(nil); err == nil {
		t.Error("a certificate for no host")
	}
}

// A device reaches the TLS server only when it trusts the written
// certificate and names a host the certificate carries: verification is
// never bypassed.
func TestTLSDeviceTrust(t *testing.T) {
	other, _, err := WriteSelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	otherPool := x509.NewCertPool()
	otherPool.AddCert(other.Leaf)
	tests := []struct {
		name       string
		roots      func(trusted *x509.CertPool) *x509.CertPool
		serverName string
		wantErr    func(error) bool
	}{
		{"written certificate trusted", func(p *x509.CertPool) *x509.CertPool { return p }, "", nil},
		{"by the name localhost", func(p *x509.CertPool) *x509.CertPool { return p }, "localhost", nil},
		{"system roots only", func(*x509.CertPool) *x509.CertPool { return nil }, "", isUnknownAuthority},
		{"another self-signed certificate", func(*x509.CertPool) *x509.CertPool { return otherPool }, "", isUnknownAuthority},
		{"a name the certificate does not carry", func(p *x509.CertPool) *x509.CertPool { return p }, "mock.example",
			func(err error) bool { var h x509.HostnameError; return errors.As(err, &h) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, base, pool := startTLSServer(t, Options{})
			tok := s.IssueDeviceToken("dev-tls")
			d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: tt.roots(pool), ServerName: tt.serverName}}
			conn, _, err := d.DialContext(testCtx(t), wsURL(base, DeviceConnectPath), http.Header{"Authorization": {"Bearer " + tok}})
			if tt.wantErr != nil {
				if err == nil {
					conn.Close()
					t.Fatal("connected")
				}
				if !tt.wantErr(err) {
					t.Fatalf("error %v (%T)", err, err)
				}
				if n := s.DeviceConnects("dev-tls"); n != 0 {
					t.Fatalf("server counted %d connects", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := s.WaitDevice(testCtx(t), "dev-tls"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func isUnknownAuthority(err error) bool {
	var u x509.UnknownAuthorityError
	return errors.As(err, &u)
}

// Over TLS a browser-like client logs in (the cookie is marked Secure),
// loads the console and opens a terminal over wss:// from the page's
// origin, as the web console and the Mender UI do.
func TestTLSLoginAndManagementWebsocket(t *testing.T) {
	s, base, pool := startTLSServer(t, Options{})
	tlsCfg := &tls.Config{RootCAs: pool}

	devConn, _, err := (&websocket.Dialer{TLSClientConfig: tlsCfg}).DialContext(testCtx(t), wsURL(base, DeviceConnectPath),
		http.Header{"Authorization": {"Bearer " + s.IssueDeviceToken("dev-tls")}})
	if err != nil {
		t.Fatal(err)
	}
	fd := &fakeDevice{conn: devConn, recv: make(chan *wire.ProtoMsg, 1024), raw: make(chan []byte, 1024), done: make(chan struct{})}
	go fd.loop()
	t.Cleanup(fd.close)

	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}}
	resp, err := c.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("console page: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, base+LoginPath, nil)
	req.SetBasicAuth(DefaultUser, DefaultPassword)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var jwt *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == JWTCookie {
			jwt = ck
		}
	}
	if resp.StatusCode != http.StatusOK || jwt == nil || !jwt.Secure {
		t.Fatalf("login: %d, cookie %+v", resp.StatusCode, jwt)
	}

	// The page's websocket: wss://, the cookie, its own origin.
	hdr := http.Header{"Origin": {base}, "Cookie": {JWTCookie + "=" + jwt.Value}}
	user, _, err := (&websocket.Dialer{TLSClientConfig: tlsCfg}).DialContext(testCtx(t),
		wsURL(base, DeviceConnectMgmtDir+"dev-tls/connect"), hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	send := func(m *wire.ProtoMsg) {
		t.Helper()
		b, err := wire.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := user.WriteMessage(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(typ string) *wire.ProtoMsg {
		t.Helper()
		_ = user.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, b, err := user.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s: %v", typ, err)
			}
			m, err := wire.Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Header.Proto == wire.ProtoShell && m.Header.MsgType == typ {
				return m
			}
		}
	}
	send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew,
		Properties: map[string]interface{}{wire.PropTerminalWidth: 80, wire.PropTerminalHeight: 24}}})
	fd.waitFor(t, "shell new", isShell(wire.ShellNew))
	sid := recv(wire.ShellNew).Header.SessionID
	send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellData, SessionID: sid}, Body: []byte("over wss\n")})
	if got := recv(wire.ShellData); string(got.Body) != "over wss\n" {
		t.Fatalf("echo %q", got.Body)
	}

	// Another origin is still refused over TLS.
	hdr.Set("Origin", "https://localhost.evil.example")
	if conn, resp, err := (&websocket.Dialer{TLSClientConfig: tlsCfg}).DialContext(testCtx(t),
		wsURL(base, DeviceConnectMgmtDir+"dev-tls/connect"), hdr); err == nil {
		conn.Close()
		t.Fatal("websocket from another origin accepted")
	} else if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another origin: %v, %v", err, resp)
	}
}
