package mockserver

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"
)

func pubPEM(t testing.TB, k crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func sign(t testing.TB, k crypto.Signer, body []byte) string {
	t.Helper()
	var sig []byte
	switch k := k.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, body)
	case *rsa.PrivateKey:
		sum := sha256.Sum256(body)
		var err error
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func authBody(t testing.TB, idData string, k crypto.Signer) []byte {
	t.Helper()
	b, err := json.Marshal(AuthRequest{IDData: idData, PubKey: pubPEM(t, k)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// authenticateDevice does a signed auth request and returns the token.
func authenticateDevice(t testing.TB, baseURL, idData string, k crypto.Signer) string {
	t.Helper()
	body := authBody(t, idData, k)
	status, _, tok := httpDo(t, http.MethodPost, baseURL+AuthRequestsPath, bytes.NewReader(body),
		http.Header{SignatureHeader: {sign(t, k, body)}, "Content-Type": {"application/json"}})
	if status != http.StatusOK {
		t.Fatalf("auth request: %d %s", status, tok)
	}
	return tok
}

func TestAuthRequests(t *testing.T) {
	s, url := startServer(t, Options{})
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const idData = `{"mac":"52:54:00:12:34:56"}`
	wantID, _ := DeviceID(idData)
	good := authBody(t, idData, edKey)

	tests := []struct {
		name       string
		method     string
		body       []byte
		sig        string
		wantStatus int
	}{
		{"ed25519", http.MethodPost, good, sign(t, edKey, good), http.StatusOK},
		{"rsa", http.MethodPost, authBody(t, idData, rsaKey), "", http.StatusOK},
		{"signature of another key", http.MethodPost, good, sign(t, otherKey, good), http.StatusUnauthorized},
		{"signature of another body", http.MethodPost, good, sign(t, edKey, []byte("{}")), http.StatusUnauthorized},
		{"signature not base64", http.MethodPost, good, "!!!", http.StatusUnauthorized},
		{"missing signature", http.MethodPost, good, "-", http.StatusBadRequest},
		{"not json", http.MethodPost, []byte("hello"), "x", http.StatusBadRequest},
		{"missing pubkey", http.MethodPost, []byte(`{"id_data":"{\"mac\":\"x\"}"}`), "x", http.StatusBadRequest},
		{"id_data not an object", http.MethodPost, authBody(t, `"mac"`, edKey), "", http.StatusBadRequest},
		{"pubkey not PEM", http.MethodPost, []byte(`{"id_data":"{\"mac\":\"x\"}","pubkey":"nope"}`), "x", http.StatusBadRequest},
		{"wrong method", http.MethodGet, nil, "x", http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig := tc.sig
			if sig == "" { // sign with the key the body names
				if strings.Contains(tc.name, "rsa") {
					sig = sign(t, rsaKey, tc.body)
				} else {
					sig = sign(t, edKey, tc.body)
				}
			}
			hdr := http.Header{"Content-Type": {"application/json"}}
			if sig != "-" {
				hdr.Set(SignatureHeader, sig)
			}
			status, ctype, body := httpDo(t, tc.method, url+AuthRequestsPath, bytes.NewReader(tc.body), hdr)
			if status != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", status, body, tc.wantStatus)
			}
			if status != http.StatusOK {
				var e struct{ Error string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" || !strings.HasPrefix(ctype, "application/json") {
					t.Fatalf("error answer not JSON {error}: %s %q", ctype, body)
				}
				return
			}
			if ctype != "application/jwt" {
				t.Errorf("content type %q", ctype)
			}
			c, err := verifyToken(s.key, body, time.Now())
			if err != nil {
				t.Fatalf("token does not verify: %v", err)
			}
			if !c.Device || c.Subject != wantID {
				t.Errorf("claims %+v, want device %s", c, wantID)
			}
		})
	}
	devs := s.deviceList()
	if len(devs) != 1 || devs[0].ID != wantID || devs[0].IdentityData != idData || devs[0].Status != "accepted" || devs[0].Connected {
		t.Errorf("devices after auth: %+v", devs)
	}
}
