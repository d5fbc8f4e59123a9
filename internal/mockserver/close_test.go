package mockserver

import (
	"errors"
	"testing"

	"github.com/gorilla/websocket"
)

// TestDeviceCloseCodes: a normal shutdown of the server says 1001 (going
// away) to the device; dropping one device says 1011, as deviceconnect does.
func TestDeviceCloseCodes(t *testing.T) {
	tests := []struct {
		name  string
		close func(s *Server, d *Device) error
		code  int
	}{
		{"server shutdown", func(s *Server, _ *Device) error { return s.Close() }, websocket.CloseGoingAway},
		{"device dropped", func(_ *Server, d *Device) error { return d.Close() }, websocket.CloseInternalServerErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := startServer(t, Options{})
			conn, _, err := dialDevice(testCtx(t), url, s.IssueDeviceToken("dev-close"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			d, err := s.WaitDevice(testCtx(t), "dev-close")
			if err != nil {
				t.Fatal(err)
			}
			read := make(chan error, 1)
			go func() {
				for {
					if _, _, err := conn.ReadMessage(); err != nil {
						read <- err
						return
					}
				}
			}()
			if err := tt.close(s, d); err != nil {
				t.Fatal(err)
			}
			var ce *websocket.CloseError
			if err := <-read; !errors.As(err, &ce) || ce.Code != tt.code {
				t.Fatalf("device read %v, want close %d", err, tt.code)
			}
		})
	}
}
