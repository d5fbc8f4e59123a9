package config

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRedacted(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Auth.Token = "eyJhbGciOi.secret.token"
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "secret") {
		t.Fatalf("token leaked:\n%s", out)
	}
	if c.Auth.Token != "eyJhbGciOi.secret.token" {
		t.Fatal("Redacted modified the config")
	}
	var back Config
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("output is not loadable JSON: %v\n%s", err, out)
	}
	eq(t, "Token", back.Auth.Token, "<redacted>")
	eq(t, "User", back.User, "nobody")
	eq(t, "StopGrace", back.Sessions.StopGrace, Duration(2*time.Second))
	for _, want := range []string{`"Token": "<redacted>"`, `"StopGrace": "2s"`, `"BackoffMax": "1m"`, `"FirstJitter": "1s"`, `"PongTimeout": "1m5s"`, "\n  \"User\": \"nobody\""} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}

	c.Auth.Token = ""
	out, err = c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"Token": ""`) {
		t.Errorf("empty token should stay empty:\n%s", out)
	}
}

func TestIdleAndAbsoluteTimeoutWithoutNormalisation(t *testing.T) {
	t.Parallel()
	c := Default()
	eq(t, "IdleTimeout", c.IdleTimeout(), 600*time.Second)
	eq(t, "AbsoluteTimeout", c.AbsoluteTimeout(), time.Duration(0))
	c.Sessions.StopExpired = false
	c.Sessions.ExpireAfter, c.Sessions.ExpireAfterIdle = 10, 20
	eq(t, "IdleTimeout", c.IdleTimeout(), time.Duration(0))
	eq(t, "AbsoluteTimeout", c.AbsoluteTimeout(), time.Duration(0))
}

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{`"500ms"`, 500 * time.Millisecond, ""},
		{`"1h30m"`, 90 * time.Minute, ""},
		{`2`, 2 * time.Second, ""},
		{`0.25`, 250 * time.Millisecond, ""},
		{`1e-3`, time.Millisecond, ""},
		{`0`, 0, ""},
		{`"soon"`, 0, `invalid duration "soon"`},
		{`"5"`, 0, `invalid duration "5"`}, // a JSON string must carry a unit
		{`1e300`, 0, "out of range"},
	}
	for _, tt := range tests {
		var d Duration
		err := json.Unmarshal([]byte(tt.in), &d)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || d.Duration() != tt.want {
			t.Errorf("%s: got %v, %v; want %v", tt.in, d.Duration(), err, tt.want)
		}
	}

	d := Duration(7 * time.Second)
	if err := json.Unmarshal([]byte("null"), &d); err != nil || d != Duration(7*time.Second) {
		t.Errorf("null: got %v, %v; want unchanged", d, err)
	}
	for dur, want := range map[time.Duration]string{
		0: `"0s"`, 1500 * time.Millisecond: `"1.5s"`, time.Minute: `"1m"`, time.Hour: `"1h"`,
		90 * time.Minute: `"1h30m"`, 61 * time.Second: `"1m1s"`, 24 * time.Hour: `"24h"`,
	} {
		b, err := json.Marshal(Duration(dur))
		if err != nil || string(b) != want {
			t.Errorf("Marshal(%v) = %s, %v; want %s", dur, b, err, want)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || back.Duration() != dur {
			t.Errorf("round trip of %v: %v, %v", dur, back, err)
		}
	}
}

func TestDurationDecodeEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"500ms", 500 * time.Millisecond, true},
		{"2m", 2 * time.Minute, true},
		{"30", 30 * time.Second, true},
		{" 1.5 ", 1500 * time.Millisecond, true},
		{"", 0, false},
		{"later", 0, false},
		{"inf", 0, false},
	}
	for _, tt := range tests {
		var d Duration
		err := d.Decode(tt.in)
		if (err == nil) != tt.ok || (tt.ok && d.Duration() != tt.want) {
			t.Errorf("Decode(%q) = %v, %v; want %v ok=%v", tt.in, d.Duration(), err, tt.want, tt.ok)
		}
	}
}
