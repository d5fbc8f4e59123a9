package mockauth

import (
	"crypto"
	"path/filepath"
	"testing"
)

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
