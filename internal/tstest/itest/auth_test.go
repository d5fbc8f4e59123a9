package itest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/mockauth"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// The auth service may come up after tether (boot order): tether must
// connect promptly once it appears, without a restart.
func TestAuthServiceAppearsLater(t *testing.T) {
	e := newEnv(t, nil)
	d := e.waitDevice()
	e.auth.Close() // gone from the bus; tether keeps its last credentials
	d.Close()      // and the link drops: the next dial still uses them
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	d2, err := e.srv.WaitReconnect(ctx, d)
	if err != nil {
		t.Fatalf("no reconnect with the last credentials: %v", err)
	}
	// Now a fresh auth service appears with a new token.
	conn, err := dbus.Connect(e.bus)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok := e.srv.IssueDeviceToken(e.deviceID)
	start := time.Now()
	svc, err := mockauth.New(slog.New(slog.NewTextHandler(io.Discard, nil)), conn, mockauth.Options{Token: tok, ServerURL: e.url})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	d3, err := e.srv.WaitReconnect(ctx, d2)
	if err != nil {
		t.Fatalf("no reconnect after the service appeared: %v", err)
	}
	took := time.Since(start)
	if d3.Token() != tok {
		t.Fatal("reconnected without the new token")
	}
	t.Logf("service appeared → reconnected with its token in %v", took)
	if took > 500*time.Millisecond { // 100 ms to the credentials, plus a dial on a loaded CI machine
		t.Fatalf("took %v to pick up the new service", took)
	}
}

func TestStaticAuthTokenFile(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	e := &env{t: t}
	e.ctx = context.Background()
	e.jwts = map[string]string{}
	e.log = &syncbuf.Buffer{}
	e.startServer("127.0.0.1:0")
	e.deviceID = "11111111-2222-4333-8444-555555555555"
	if err := os.WriteFile(tokenFile, []byte(e.srv.IssueDeviceToken(e.deviceID)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfg = map[string]interface{}{
		"User": shellUser(t), "ShellCommand": "/bin/sh", "ShellArguments": []string{"-l"},
		"ServerURL": e.url,
		"Auth":      map[string]interface{}{"Source": "static", "TokenFile": tokenFile},
		"Reconnect": map[string]interface{}{"BackoffBase": "50ms", "BackoffMax": "500ms"},
		"Log":       map[string]interface{}{"Journal": "off"},
	}
	e.startDaemon()
	d := e.waitDevice()
	e.run(e.open(adminEmail), "true")
	// Rotating the file's token reconnects with the new one.
	tok := e.srv.IssueDeviceToken(e.deviceID)
	if err := os.WriteFile(tokenFile+".new", []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tokenFile+".new", tokenFile); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d2, err := e.srv.WaitReconnect(ctx, d)
	if err != nil {
		t.Fatalf("no reconnect after the token file changed: %v", err)
	}
	if d2.Token() != tok {
		t.Fatal("reconnected with the old token")
	}
}

// TLS is verified by default; a CA file (Link.CAFile) makes a private
// server trusted; Link.InsecureSkipVerify is the explicit escape hatch.
// Upstream's deprecated SkipVerify and ServerCertificate change nothing.
func TestTLSVerification(t *testing.T) {
	tests := []struct {
		name    string
		useCA   bool
		skip    bool
		legacy  bool // the same settings under upstream's deprecated keys
		connect bool
	}{
		{"untrusted certificate refused", false, false, false, false},
		{"CA file trusts the server", true, false, false, true},
		{"skip verify", false, true, false, true},
		{"legacy SkipVerify does not weaken TLS", false, true, true, false},
		{"legacy ServerCertificate is not read", true, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.waitDevice()
			ts := httptest.NewUnstartedServer(e.srv.Handler())
			ts.StartTLS()
			defer ts.Close()
			caFile := filepath.Join(t.TempDir(), "ca.pem")
			cert, err := x509.ParseCertificate(ts.TLS.Certificates[0].Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
				t.Fatal(err)
			}
			// Restart tether against the TLS endpoint.
			e.stopDaemon()
			link := map[string]interface{}{}
			if tt.legacy {
				link, e.cfg["ServerCertificate"], e.cfg["SkipVerify"] = nil, caFile, tt.skip
			} else {
				link["InsecureSkipVerify"] = tt.skip
				if tt.useCA {
					link["CAFile"] = caFile
				}
			}
			e.cfg["Link"] = link
			e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), ts.URL)
			before := e.srv.DeviceConnects(e.deviceID)
			e.startDaemon()
			if tt.connect {
				eventually(t, 10*time.Second, "TLS connection", func() bool { return e.srv.DeviceConnects(e.deviceID) > before })
				return
			}
			eventually(t, 10*time.Second, "a logged certificate error", func() bool {
				return strings.Contains(e.log.String(), "certificate")
			})
			if n := e.srv.DeviceConnects(e.deviceID); n != before {
				t.Fatal("connected to a server with an untrusted certificate")
			}
		})
	}
}
