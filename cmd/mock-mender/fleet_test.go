package main

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/mockserver"
)

// TestServeFleetFlags: --connect-log has a line per device connect with its
// answer, --connect-rate refuses the connect above the rate with 503 and
// --connect-retry-after, and SIGUSR1 drops every device socket with 1011
// while the server stays up.
func TestServeFleetFlags(t *testing.T) {
	bin := buildBinary(t)
	logFile := filepath.Join(t.TempDir(), "connects")
	cmd, url := startServe(t, bin, "--connect-log", logFile, "--connect-rate", "0.001", "--connect-burst", "2", "--connect-retry-after", "30s")
	tok := deviceAuth(t, url)
	wsURL := "ws" + strings.TrimPrefix(url, "http") + mockserver.DeviceConnectPath
	hdr := http.Header{"Authorization": {"Bearer " + tok}}
	conn, _, err := websocket.DefaultDialer.DialContext(testCtx(t), wsURL, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	read := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				read <- err
				return
			}
		}
	}()
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var ce *websocket.CloseError
	select {
	case err := <-read:
		if !errors.As(err, &ce) || ce.Code != websocket.CloseInternalServerErr {
			t.Fatalf("after SIGUSR1 the device read %v, want close 1011", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGUSR1 did not close the device socket")
	}
	conn2, _, err := websocket.DefaultDialer.DialContext(testCtx(t), wsURL, hdr)
	if err != nil {
		t.Fatalf("second connect (within the burst): %v", err)
	}
	conn2.Close()
	_, resp, err := websocket.DefaultDialer.DialContext(testCtx(t), wsURL, hdr)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "30" {
		t.Fatalf("third connect: %v %v, want 503 with Retry-After: 30", err, resp)
	}
	stopServe(t, cmd, syscall.SIGTERM)
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var got []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || len(f[0]) < 19 {
			t.Fatalf("connect log line %q, want: nanoseconds status device", l)
		}
		got = append(got, f[1])
		if f[2] == "-" || f[2] == "" {
			t.Fatalf("connect log line %q lacks the device", l)
		}
	}
	if strings.Join(got, ",") != "101,101,503" {
		t.Fatalf("connect log answers %v, want 101,101,503:\n%s", got, b)
	}
}
