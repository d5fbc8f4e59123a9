package mockauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/tether-agent/tether/internal/mockserver/authapi"
)

// AuthRequestsPath is the device authentication endpoint of a Mender server.
const AuthRequestsPath = authapi.Path

// SignatureHeader carries the base64 signature of the request body.
const SignatureHeader = authapi.SignatureHeader

// maxTokenSize bounds the server's answer; real device JWTs are ~1 KiB.
const maxTokenSize = 64 << 10

// errNotAccepted is a 401: the server knows nothing of the device yet or
// has not accepted it.
var errNotAccepted = errors.New("device not accepted yet (401)")

// AuthRequest is the JSON body of an authentication request, the one
// the mock server checks.
type AuthRequest = authapi.Request

// GenerateKey makes a device key: "ed25519" (also for "") or "rsa" (3072
// bits, as the Mender client generates).
func GenerateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "", "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating ed25519 key: %w", err)
		}
		return k, nil
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return nil, fmt.Errorf("generating rsa key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("unknown key type %q (want ed25519 or rsa)", keyType)
	}
}

// LoadOrCreateKey reads a PKCS #8 PEM private key from path, or, when the
// file does not exist, generates one of keyType and stores it there (0600),
// so that a device keeps its identity across restarts.
func LoadOrCreateKey(path, keyType string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := GenerateKey(keyType)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encoding key: %w", err)
		}
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
			return nil, fmt.Errorf("storing key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("key file %s is not PEM", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing key file %s: %w", path, err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key file %s holds an unusable %T", path, parsed)
	}
	return key, nil
}

// deviceAuth performs Mender device authentication against a server.
type deviceAuth struct {
	server string
	mac    string
	key    crypto.Signer
	client *http.Client
}

// request makes one authentication request and returns the device JWT.
func (d *deviceAuth) request(ctx context.Context) (string, error) {
	pubDER, err := x509.MarshalPKIXPublicKey(d.key.Public())
	if err != nil {
		return "", fmt.Errorf("encoding public key: %w", err)
	}
	idData, err := json.Marshal(map[string]string{"mac": d.mac})
	if err != nil {
		return "", fmt.Errorf("encoding identity: %w", err)
	}
	body, err := json.Marshal(AuthRequest{
		IDData: string(idData),
		PubKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})),
	})
	if err != nil {
		return "", fmt.Errorf("encoding request: %w", err)
	}
	sig, err := authapi.Sign(d.key, body)
	if err != nil {
		return "", err
	}
	url := strings.TrimRight(d.server, "/") + AuthRequestsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, base64.StdEncoding.EncodeToString(sig))
	resp, err := d.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("auth request: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenSize+1))
	if err != nil {
		return "", fmt.Errorf("reading auth answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return "", errNotAccepted
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("auth request: %s: %s", resp.Status, snippet(answer))
	case len(answer) > maxTokenSize:
		return "", fmt.Errorf("auth answer larger than %d bytes", maxTokenSize)
	}
	token := strings.TrimSpace(string(answer))
	if token == "" {
		return "", errors.New("auth answer is empty")
	}
	return token, nil
}

// snippet shortens an error body for a log line or error message.
func snippet(b []byte) string {
	const n = 200
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
