package mockserver

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/tether-agent/tether/internal/mockserver/authapi"
)

// SignatureHeader carries the base64 signature of an authentication
// request body.
const SignatureHeader = authapi.SignatureHeader

// maxAuthRequest bounds an authentication request body; real ones are a
// few KiB (an RSA 4096 key in PEM is under 1 KiB).
const maxAuthRequest = 1 << 20

// AuthRequest is the JSON body of POST auth_requests, the one the mock
// auth service sends.
type AuthRequest = authapi.Request

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
	pub, err := authapi.ParsePublicKey(req.PubKey)
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
		err = authapi.Verify(pub, body, sig)
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
