package logging

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	long := strings.Repeat("a", 512<<10)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"uuid kept", "0f0e0d0c-0b0a-4908-8706-050403020100", "0f0e0d0c-0b0a-4908-8706-050403020100"},
		{"at the limit kept", strings.Repeat("x", MaxPeerText), strings.Repeat("x", MaxPeerText)},
		{"long cut with its length", long, strings.Repeat("a", MaxPeerText) + "…(524288 bytes)"},
		// 127 ASCII bytes then a 3-byte rune straddling the limit: the
		// rune goes whole.
		{"cut on a rune boundary", strings.Repeat("b", MaxPeerText-1) + "€€", strings.Repeat("b", MaxPeerText-1) + "…(133 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Clip(tt.in)
			if got != tt.want {
				t.Fatalf("Clip = %q, want %q", got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("Clip produced invalid UTF-8: %q", got)
			}
		})
	}
}
