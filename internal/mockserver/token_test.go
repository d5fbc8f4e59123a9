package mockserver

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestTokenIssueAndVerify(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	good := claims{Subject: "dev-1", Issuer: tokenIssuer, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix(), ID: "j1", Device: true}
	tok, err := signToken(key, good)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	// Swap in a payload claiming another subject, keeping the signature.
	forged, _ := json.Marshal(claims{Subject: "dev-2", Issuer: tokenIssuer, ExpiresAt: good.ExpiresAt, Device: true})
	tamperedPayload := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	tamperedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	noneHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	algNone := noneHdr + "." + parts[1] + "."

	tests := []struct {
		name  string
		token string
		key   []byte
		at    time.Time
		want  error
	}{
		{"valid", tok, key, now, nil},
		{"valid just before expiry", tok, key, now.Add(time.Hour - time.Second), nil},
		{"expired", tok, key, now.Add(time.Hour), errTokenExpired},
		{"tampered payload", tamperedPayload, key, now, errTokenSignature},
		{"tampered signature", tamperedSig, key, now, errTokenSignature},
		{"other key", tok, []byte("another key"), now, errTokenSignature},
		{"alg none", algNone, key, now, errTokenSignature},
		{"two parts", parts[0] + "." + parts[1], key, now, errTokenMalformed},
		{"garbage", "not-a-token", key, now, errTokenMalformed},
		{"bad base64", "###." + parts[1] + "." + parts[2], key, now, errTokenMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := verifyToken(tc.key, tc.token, tc.at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("verify: got %v, want %v", err, tc.want)
			}
			if tc.want == nil && c != good {
				t.Fatalf("claims %+v, want %+v", c, good)
			}
		})
	}
}

func TestIssuedTokenClaims(t *testing.T) {
	s := New(Options{TokenLifetime: time.Minute})
	defer s.Close()
	s.mu.Lock()
	user := s.issueLocked("u1", false)
	s.mu.Unlock()
	dev := s.IssueDeviceToken("d1")
	dev2 := s.IssueDeviceToken("d1")

	rawClaims := func(tok string) map[string]interface{} {
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]interface{}
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	d := rawClaims(dev)
	if d["sub"] != "d1" || d["iss"] != "Mender" || d["mender.device"] != true || d["mender.user"] != nil {
		t.Errorf("device claims %v", d)
	}
	if exp, iat := d["exp"].(float64), d["iat"].(float64); exp-iat != 60 {
		t.Errorf("lifetime %v s, want 60", exp-iat)
	}
	if !uuidRE.MatchString(d["jti"].(string)) {
		t.Errorf("jti %q is not a UUID", d["jti"])
	}
	if d2 := rawClaims(dev2); d2["jti"] == d["jti"] {
		t.Errorf("two tokens share jti %v", d["jti"])
	}
	u := rawClaims(user)
	if u["sub"] != "u1" || u["mender.user"] != true || u["mender.device"] != nil {
		t.Errorf("user claims %v", u)
	}
	for _, tok := range []string{dev, user} {
		if _, err := verifyToken(s.key, tok, time.Now()); err != nil {
			t.Errorf("issued token does not verify: %v", err)
		}
	}
}

func TestDerivedIDs(t *testing.T) {
	a, err := DeviceID(`{"mac":"52:54:00:12:34:56","sku":"x"}`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := DeviceID(`{ "sku": "x", "mac": "52:54:00:12:34:56" }`)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := DeviceID(`{"mac":"52:54:00:12:34:57"}`)
	if a != b {
		t.Errorf("key order changes the id: %s vs %s", a, b)
	}
	if a == c {
		t.Errorf("different identities share id %s", a)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(a) {
		t.Errorf("device id %q is not UUID formatted", a)
	}
	if _, err := DeviceID(`"just a string"`); err == nil {
		t.Error("non-object id_data accepted")
	}
	if u1, u2 := UserID("a@b"), UserID("a@b"); u1 != u2 || u1 == UserID("c@d") || !uuidRE.MatchString(u1) {
		t.Error("user ids not stable or not distinct")
	}
}
