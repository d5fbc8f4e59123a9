package link

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tether-agent/tether/internal/wsclient"
)

// TestDisconnectReason: a close frame 1000 or 1001 is logged as a normal
// close, anything else with the error's own text.
func TestDisconnectReason(t *testing.T) {
	tests := []struct {
		name string
		errs []error
		want string
	}{
		{"going away", []error{&wsclient.CloseError{Code: wsclient.CloseGoingAway, Text: "server shutting down"}},
			"closed normally by the server (1001 going away: server shutting down)"},
		{"normal closure, wrapped, no text", []error{fmt.Errorf("read: %w", &wsclient.CloseError{Code: wsclient.CloseNormalClosure})},
			"closed normally by the server (1000 normal closure)"},
		{"internal server error", []error{&wsclient.CloseError{Code: wsclient.CloseInternalServerErr, Text: "boom"}},
			"websocket: close 1011 (internal server error): boom"},
		{"first error wins", []error{nil, errors.New("write: broken pipe"), context.Canceled}, "write: broken pipe"},
		{"none", []error{nil, nil}, "closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := firstErr(tt.errs...); got != tt.want {
				t.Errorf("reason %q, want %q", got, tt.want)
			}
		})
	}
}
