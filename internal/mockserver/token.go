package mockserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// tokenIssuer is the "iss" claim of every token, as the real server sets it.
const tokenIssuer = "Mender"

// claims are the JWT claims the Mender services read. Tenant is never set
// by the mock (single tenant) but is decoded so foreign tokens round-trip.
type claims struct {
	Subject   string `json:"sub"`
	Issuer    string `json:"iss"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	ID        string `json:"jti"`
	Device    bool   `json:"mender.device,omitempty"`
	User      bool   `json:"mender.user,omitempty"`
	Tenant    string `json:"mender.tenant,omitempty"`
}

// jwtHeader is fixed: the mock only ever signs HS256.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

var (
	errTokenMalformed = errors.New("malformed token")
	errTokenSignature = errors.New("token signature is invalid")
	errTokenExpired   = errors.New("token has expired")
)

// signToken produces a compact HS256 JWT.
func signToken(key []byte, c claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	signingInput := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(mac(key, signingInput)), nil
}

// verifyToken checks the signature and expiry of an HS256 JWT. Any other
// algorithm (above all "none") is rejected: the header is not trusted.
func verifyToken(key []byte, token string, now time.Time) (claims, error) {
	var c claims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errTokenMalformed
	}
	hdrJSON, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return c, fmt.Errorf("%w: header: %w", errTokenMalformed, err)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		return c, fmt.Errorf("%w: header: %w", errTokenMalformed, err)
	}
	if hdr.Alg != "HS256" {
		return c, fmt.Errorf("%w: algorithm %q", errTokenSignature, hdr.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return c, fmt.Errorf("%w: signature: %w", errTokenMalformed, err)
	}
	if !hmac.Equal(sig, mac(key, parts[0]+"."+parts[1])) {
		return c, errTokenSignature
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, fmt.Errorf("%w: payload: %w", errTokenMalformed, err)
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, fmt.Errorf("%w: claims: %w", errTokenMalformed, err)
	}
	if c.ExpiresAt <= now.Unix() {
		return c, errTokenExpired
	}
	return c, nil
}

func mac(key []byte, signingInput string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(signingInput))
	return h.Sum(nil)
}

// tokenFingerprint names a token in logs without revealing it.
func tokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}

// randomUUID returns a version 4 UUID string.
func randomUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; a mock server without
		// randomness cannot hand out session ids anyway.
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// derivedUUID maps a name to a stable UUID-formatted id (version 5 bits
// over a SHA-256 prefix), so ids survive server restarts.
func derivedUUID(name string) string {
	sum := sha256.Sum256([]byte(name))
	var b [16]byte
	copy(b[:], sum[:16])
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
