package mockauth

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"testing"
)

func pubPEM(t *testing.T, keyType string) (string, func([]byte) []byte) {
	t.Helper()
	key, err := GenerateKey(keyType)
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
				err := VerifySignature(tc.pub, tc.body, sig)
				if (err != nil) != tc.wantErr {
					t.Errorf("%s: err = %v, wantErr %v", tc.name, err, tc.wantErr)
				}
			}
		})
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	k1, err := LoadOrCreateKey(path, "ed25519")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	k2, err := LoadOrCreateKey(path, "rsa")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !k2.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k1.Public()) {
		t.Fatal("reloaded key differs from the stored one")
	}
	if _, err := GenerateKey("dsa"); err == nil {
		t.Fatal("GenerateKey(dsa) succeeded")
	}
}
