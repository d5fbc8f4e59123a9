package itest

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"go/version"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// The real binary's ClientHello, captured by a TLS server: go.mod's
// "go 1.22" must not leave the daemon with Go 1.22's crypto defaults when
// a newer toolchain builds it (cmd/tether/godebug_*.go).
func TestClientHelloUsesCurrentDefaults(t *testing.T) {
	hello := captureClientHello(t, tetherBin)
	for _, id := range hello.CipherSuites {
		if name := tls.CipherSuiteName(id); strings.Contains(name, "3DES") {
			t.Errorf("ClientHello offers %s", name)
		}
	}
	const pkcs1SHA1, ecdsaSHA1 = 0x0201, 0x0203
	if version.Compare(runtime.Version(), "go1.25") >= 0 {
		for _, s := range hello.SignatureSchemes {
			if s == pkcs1SHA1 || s == ecdsaSHA1 {
				t.Errorf("ClientHello offers the SHA-1 signature scheme %v", s)
			}
		}
	}
	const x25519MLKEM768 = 0x11ec
	if version.Compare(runtime.Version(), "go1.24") >= 0 {
		found := false
		for _, c := range hello.SupportedCurves {
			found = found || c == x25519MLKEM768
		}
		if !found {
			t.Errorf("ClientHello offers no ML-KEM group: %v", hello.SupportedCurves)
		}
	}
	t.Logf("ClientHello: %d suites, signature schemes %v, groups %v", len(hello.CipherSuites), hello.SignatureSchemes, hello.SupportedCurves)
}

type clientHello struct {
	CipherSuites     []uint16
	SignatureSchemes []tls.SignatureScheme
	SupportedCurves  []tls.CurveID
}

// captureClientHello points bin at a TLS listener as its server and
// returns the first ClientHello it sends.
func captureClientHello(t *testing.T, bin string) clientHello {
	t.Helper()
	got := make(chan clientHello, 1)
	errStop := errors.New("hello captured")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case got <- clientHello{CipherSuites: h.CipherSuites, SignatureSchemes: h.SignatureSchemes, SupportedCurves: h.SupportedCurves}:
			default:
			}
			return nil, errStop
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}(c)
		}
	}()

	dir := t.TempDir()
	cfg, err := json.Marshal(map[string]interface{}{
		"User": shellUser(t), "ShellCommand": "/bin/sh",
		"ServerURL": "https://" + ln.Addr().String(),
		"Auth":      map[string]interface{}{"Source": "static", "Token": "not-a-real-token"},
		"Log":       map[string]interface{}{"Journal": "off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "tether.conf")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	log := &syncbuf.Buffer{Max: 1 << 20}
	cmd := exec.Command(bin, "--config", cfgPath, "--fallback-config", filepath.Join(dir, "none.conf"), "daemon")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	select {
	case h := <-got:
		return h
	case <-time.After(30 * time.Second):
		t.Fatalf("no ClientHello from the daemon; its log:\n%s", log.String())
	}
	return clientHello{}
}
