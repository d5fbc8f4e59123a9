// Package authapi is the device authentication request of a Mender
// server as both doubles speak it: the mock auth service (internal/mockauth)
// signs and sends it, the mock server (internal/mockserver) checks it. One
// request type and one pair of signature routines, so that the two sides
// cannot drift apart.
package authapi

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Path is the device authentication endpoint of a Mender server.
const Path = "/api/devices/v1/authentication/auth_requests"

// SignatureHeader carries the base64 signature of the request body.
const SignatureHeader = "X-MEN-Signature"

// Request is the JSON body of POST Path.
type Request struct {
	// IDData is a JSON document serialised into a string, e.g.
	// `{"mac":"52:54:00:12:34:56"}`.
	IDData string `json:"id_data"`
	// PubKey is the PEM ("PUBLIC KEY", PKIX) of the device key.
	PubKey      string `json:"pubkey"`
	TenantToken string `json:"tenant_token,omitempty"`
}

// Sign signs a request body the way Mender clients do: Ed25519 signs the
// body itself, RSA signs its SHA-256 with PKCS #1 v1.5.
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

// ParsePublicKey reads a Request's PubKey: an RSA or Ed25519 key.
func ParsePublicKey(pemText string) (crypto.PublicKey, error) {
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

// Verify checks a signature made as Sign makes it.
func Verify(pub crypto.PublicKey, body, sig []byte) error {
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

// VerifyPEM is ParsePublicKey and Verify.
func VerifyPEM(pemText string, body, sig []byte) error {
	pub, err := ParsePublicKey(pemText)
	if err != nil {
		return err
	}
	return Verify(pub, body, sig)
}
