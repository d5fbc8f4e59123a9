package mockauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
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
)

// AuthRequestsPath is the device authentication endpoint of a Mender server.
const AuthRequestsPath = "/api/devices/v1/authentication/auth_requests"

// SignatureHeader carries the base64 signature of the request body.
const SignatureHeader = "X-MEN-Signature"

// maxTokenSize bounds the server's answer; real device JWTs are ~1 KiB.
const maxTokenSize = 64 << 10

// errNotAccepted is a 401: the server knows nothing of the device yet or
// has not accepted it.
var errNotAccepted = errors.New("device not accepted yet (401)")

// AuthRequest is the JSON body of an authentication request.
type AuthRequest struct {
	// IDData is itself a JSON document, e.g. {"mac":"52:54:00:12:34:56"}.
	IDData string `json:"id_data"`
	// PubKey is the PEM ("PUBLIC KEY", PKIX) of the device key.
	PubKey string `json:"pubkey"`
}

// Sign signs an authentication request body the way Mender clients do:
// Ed25519 signs the body itself, RSA signs its SHA-256 with PKCS #1 v1.5.
func Sign(key crypto.Signer, body []byte) ([]byte, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, body), nil
	case *rsa.PrivateKey:
		sum := sha256.Sum256(body)
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
		if err != nil {
			return nil, fmt.Errorf("rsa signature: %w", err)
		}
		return sig, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
}

// VerifySignature checks a signature made by Sign against the PEM public
// key of an AuthRequest; mock servers and tests use it.
func VerifySignature(pubPEM string, body, sig []byte) error {
	block, _ := pem.Decode([]byte(pubPEM))
	if block == nil {
		return errors.New("pubkey is not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("parsing pubkey: %w", err)
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(k, body, sig) {
			return errors.New("ed25519 signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		sum := sha256.Sum256(body)
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig); err != nil {
			return fmt.Errorf("rsa signature does not verify: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
}

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
	sig, err := Sign(d.key, body)
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
