package mockserver

import (
	"crypto"
	"crypto/ed25519"
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
)

// SignatureHeader carries the base64 signature of an authentication
// request body.
const SignatureHeader = "X-MEN-Signature"

// maxAuthRequest bounds an authentication request body; real ones are a
// few KiB (an RSA 4096 key in PEM is under 1 KiB).
const maxAuthRequest = 1 << 20

// AuthRequest is the JSON body of POST auth_requests.
type AuthRequest struct {
	// IDData is a JSON document serialised into a string, e.g.
	// `{"mac":"52:54:00:12:34:56"}`.
	IDData string `json:"id_data"`
	// PubKey is the PEM ("PUBLIC KEY", PKIX) of the device key.
	PubKey      string `json:"pubkey"`
	TenantToken string `json:"tenant_token,omitempty"`
}

// DeviceID is the id the server gives a device with this id_data: UUID
// formatted bits of sha256 over the canonical form of the JSON (keys
// sorted, no spaces), so it is stable across restarts and key order.
func DeviceID(idData string) (string, error) {
	var v map[string]interface{}
	if err := json.Unmarshal([]byte(idData), &v); err != nil {
		return "", fmt.Errorf("id_data is not a JSON object: %w", err)
	}
	canon, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("id_data: %w", err)
	}
	return derivedUUID(string(canon)), nil
}

func (s *Server) handleAuthRequest(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAuthRequest))
	if err != nil {
		writeError(w, http.StatusBadRequest, "failed to read request body: "+err.Error())
		return
	}
	var req AuthRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "failed to decode auth request: "+err.Error())
		return
	}
	if req.IDData == "" || req.PubKey == "" {
		writeError(w, http.StatusBadRequest, "id_data and pubkey are required")
		return
	}
	id, err := DeviceID(req.IDData)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pub, err := parsePublicKey(req.PubKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, "cannot decode public key: "+err.Error())
		return
	}
	sigText := r.Header.Get(SignatureHeader)
	if sigText == "" {
		writeError(w, http.StatusBadRequest, "missing request signature header")
		return
	}
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err == nil {
		err = verifySignature(pub, body, sig)
	}
	if err != nil {
		s.log.Info("auth request with a bad signature", "device_id", id, "err", err)
		writeError(w, http.StatusUnauthorized, "signature verification failed: "+err.Error())
		return
	}
	s.mu.Lock()
	s.rememberDeviceLocked(id, req.IDData, req.PubKey)
	tok := s.issueLocked(id, true)
	s.mu.Unlock()
	s.log.Info("device authenticated", "device_id", id, "token_sha256", tokenFingerprint(tok))
	w.Header().Set("Content-Type", "application/jwt")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, tok)
}

func parsePublicKey(pemText string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKIX key: %w", err)
	}
	switch pub.(type) {
	case *rsa.PublicKey, ed25519.PublicKey:
		return pub, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T", pub)
	}
}

// verifySignature accepts what Mender clients produce: RSA PKCS #1 v1.5
// over SHA-256 of the body, or Ed25519 over the body itself.
func verifySignature(pub crypto.PublicKey, body, sig []byte) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		sum := sha256.Sum256(body)
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig); err != nil {
			return fmt.Errorf("rsa: %w", err)
		}
		return nil
	case ed25519.PublicKey:
		if !ed25519.Verify(k, body, sig) {
			return errors.New("ed25519: verification error")
		}
		return nil
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
}
