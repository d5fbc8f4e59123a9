package config

import (
	"os"
	"strings"
	"testing"
)

func TestCheckMetricsEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		m       MetricsConfig
		wantKey string // "" = valid
		wantErr string
		mode    os.FileMode
	}{
		{"loopback port", MetricsConfig{Listen: "127.0.0.1:9110"}, "", "", 0o600},
		{"unix socket, default mode", MetricsConfig{Listen: "unix:/run/tether/metrics.sock"}, "", "", 0o600},
		{"unix socket, group mode", MetricsConfig{Listen: "unix:/run/tether/metrics.sock", SocketMode: "0660"}, "", "", 0o660},
		{"relative socket path", MetricsConfig{Listen: "unix:metrics.sock"}, "Metrics.Listen", "clean absolute path", 0},
		{"world mode", MetricsConfig{Listen: "unix:/run/m.sock", SocketMode: "0666"}, "Metrics.SocketMode", "every local user", 0},
		{"not octal", MetricsConfig{Listen: "unix:/run/m.sock", SocketMode: "rw"}, "Metrics.SocketMode", "octal", 0},
		{"mode without a socket", MetricsConfig{Listen: "127.0.0.1:9110", SocketMode: "0600"}, "Metrics.SocketMode", "only to a unix socket", 0},
		{"tcp still checked", MetricsConfig{Listen: ":9110"}, "Metrics.Listen", "not a loopback address", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := checkMetricsEndpoint(tt.m)
			if tt.wantKey == "" {
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				if got := tt.m.SocketFileMode(); got != tt.mode {
					t.Fatalf("mode %v, want %v", got, tt.mode)
				}
				return
			}
			if err == nil || key != tt.wantKey || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("%s: %v, want %s: …%s…", key, err, tt.wantKey, tt.wantErr)
			}
		})
	}
}
