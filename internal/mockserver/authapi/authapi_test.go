package authapi

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func pubPEM(t *testing.T, keyType string) (string, func([]byte) []byte) {
	t.Helper()
	var key crypto.Signer
	var err error
	switch keyType {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sign := func(b []byte) []byte {
		sig, err := Sign(key, b)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), sign
}

// What Sign makes, VerifyPEM accepts, and nothing else.
func TestSignVerify(t *testing.T) {
	body := []byte(`{"id_data":"{\"mac\":\"x\"}","pubkey":"..."}`)
	for _, keyType := range []string{"ed25519", "rsa"} {
		t.Run(keyType, func(t *testing.T) {
			pub, sign := pubPEM(t, keyType)
			otherPub, _ := pubPEM(t, keyType)
			sig := sign(body)
			tests := []struct {
				name    string
				pub     string
				body    []byte
				wantErr bool
			}{
				{"valid", pub, body, false},
				{"tampered body", pub, append([]byte{' '}, body...), true},
				{"other key", otherPub, body, true},
				{"not pem", "garbage", body, true},
			}
			for _, tc := range tests {
				err := VerifyPEM(tc.pub, tc.body, sig)
				if (err != nil) != tc.wantErr {
					t.Errorf("%s: err = %v, wantErr %v", tc.name, err, tc.wantErr)
				}
			}
		})
	}
}
