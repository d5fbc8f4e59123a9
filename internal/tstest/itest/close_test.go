package itest

import (
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// TestServerCloseReason: a mock server shutting down says 1001 and tether
// logs a normal close; a dropped device (1011) is logged as the error.
func TestServerCloseReason(t *testing.T) {
	tests := []struct {
		name  string
		close func(e *env, d *mockserver.Device)
		want  string
	}{
		{"server shutdown", func(e *env, _ *mockserver.Device) { e.srv.Close() }, "closed normally by the server (1001 going away"},
		{"device dropped", func(_ *env, d *mockserver.Device) { d.Close() }, "close 1011 (internal server error)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			d := e.waitDevice()
			tt.close(e, d)
			var line string
			eventually(t, 10*time.Second, "the disconnect log line", func() bool {
				for _, l := range strings.Split(e.log.String(), "\n") {
					if strings.Contains(l, "disconnected from server") {
						line = l
						return true
					}
				}
				return false
			})
			if !strings.Contains(line, tt.want) {
				t.Errorf("log line %q lacks %q", line, tt.want)
			}
		})
	}
}
