package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// serveInProcess runs "serve" with args and returns its base URL and
// stderr; the server stops when the test ends.
func serveInProcess(t *testing.T, args ...string) (string, *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	stderr := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...), nil, pw, stderr)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(pr).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case url := <-line:
		return url, stderr
	case <-time.After(10 * time.Second):
		t.Fatalf("serve printed no URL; stderr:\n%s", stderr.String())
		return "", nil
	}
}

// tlsGet fetches url trusting roots (nil: the system's), naming host.
func tlsGet(t *testing.T, url string, roots *x509.CertPool, host string) (*http.Response, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host}}}
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

// serve --tls-self-signed: an https URL, a certificate in DIR for the
// listen address, localhost and the allowed names, which clients must
// trust; the key stays out of the log. The written pair, given back with
// --tls-cert/--tls-key, serves the same certificate.
func TestServeTLSSelfSigned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	url, stderr := serveInProcess(t, "--tls-self-signed", dir, "--allowed-host", "mock.example")
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("serve printed %q", url)
	}
	certPath, keyPath := filepath.Join(dir, mockserver.SelfSignedCertFile), filepath.Join(dir, mockserver.SelfSignedKeyFile)
	pemBytes, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in cert.pem")
	}
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", st, err)
	}
	for _, host := range []string{"", "localhost", "mock.example"} {
		resp, err := tlsGet(t, url+"/", pool, host)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET / as %q trusting cert.pem: %v, %v", host, resp, err)
		}
	}
	if _, err := tlsGet(t, url+"/", nil, ""); !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Fatalf("GET / trusting the system's roots only: %v", err)
	}
	// The log says where the certificate is and its fingerprint, never
	// the key.
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	keyLine := strings.Split(string(keyPEM), "\n")[1] // the first line of base64
	log := stderr.String()
	der, _ := pem.Decode(pemBytes)
	sum := sha256.Sum256(der.Bytes)
	if !strings.Contains(log, certPath) || !strings.Contains(log, hex.EncodeToString(sum[:])) {
		t.Errorf("log lacks the certificate's path or fingerprint:\n%s", log)
	}
	if len(keyLine) < 40 || strings.Contains(log, "PRIVATE KEY") || strings.Contains(log, keyLine) {
		t.Errorf("key material in the log:\n%s", log)
	}

	// The same pair, given by flags.
	url2, _ := serveInProcess(t, "--tls-cert", certPath, "--tls-key", keyPath)
	resp, err := tlsGet(t, url2+"/", pool, "")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / from --tls-cert/--tls-key: %v, %v", resp, err)
	}
	if got := resp.TLS.PeerCertificates[0].Raw; string(got) != string(der.Bytes) {
		t.Fatal("--tls-cert serves another certificate")
	}
}

func TestServeTLSFlagErrors(t *testing.T) {
	dir := t.TempDir()
	bogus := filepath.Join(dir, "bogus.pem")
	if err := os.WriteFile(bogus, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", bogus}, "go together"},
		{[]string{"--tls-key", bogus}, "go together"},
		{[]string{"--tls-self-signed", dir, "--tls-cert", bogus, "--tls-key", bogus}, "exclude each other"},
		{[]string{"--tls-cert", bogus, "--tls-key", bogus}, "--tls-cert/--tls-key"},
	}
	for _, tt := range tests {
		err := run(testCtx(t), append([]string{"serve", "--listen", "127.0.0.1:0"}, tt.args...), nil, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}

func TestCertHosts(t *testing.T) {
	tests := []struct {
		listen  string
		allowed []string
		want    []string // must all be present
	}{
		{"127.0.0.1:8080", nil, []string{"localhost", "127.0.0.1"}},
		{"[::1]:8080", []string{"dev.example"}, []string{"localhost", "::1", "dev.example"}},
		{"0.0.0.0:8080", nil, []string{"localhost", "127.0.0.1", "::1"}},
		{":8080", nil, []string{"localhost", "127.0.0.1"}},
	}
	for _, tt := range tests {
		got, err := certHosts(tt.listen, tt.allowed)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				t.Errorf("certHosts(%q, %v) = %v, lacks %s", tt.listen, tt.allowed, got, w)
			}
		}
	}
	if _, err := certHosts("no-port", nil); err == nil {
		t.Error("a listen address without a port accepted")
	}
}
