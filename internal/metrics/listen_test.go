//go:build !nometrics

package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeUnixSocket(t *testing.T) {
	tests := []struct {
		name     string
		mode     os.FileMode
		want     os.FileMode
		existing func(t *testing.T, path string) // what is at the path before
		wantErr  string
	}{
		{name: "default mode", want: 0o600},
		{name: "group mode", mode: 0o660, want: 0o660},
		{name: "stale socket replaced", want: 0o600, existing: func(t *testing.T, path string) {
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			// Leave the file behind, as a crashed daemon would.
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}},
		{name: "regular file kept", existing: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "is not a socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "metrics.sock")
			if tt.existing != nil {
				tt.existing(t, path)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			ep := Endpoint{Listen: "unix:" + path, SocketMode: tt.mode}
			go func() { done <- ServeEndpoint(ctx, log, ep, New(BuildInfo{}, Limits{}), nil) }()
			if tt.wantErr != "" {
				err := <-done
				cancel()
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ServeEndpoint: %v, want %q", err, tt.wantErr)
				}
				return
			}
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", path)
				}}}
			var resp *http.Response
			var err error
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if resp, err = c.Get("http://metrics/metrics"); err == nil {
					break
				}
				if time.Now().After(deadline) {
					cancel()
					t.Fatalf("no answer on the socket: %v", err)
				}
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "tether_build_info") {
				t.Fatalf("scrape over the socket: %d %q", resp.StatusCode, body)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != tt.want {
				t.Fatalf("socket mode %v, want %v", fi.Mode(), tt.want)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Fatalf("socket left behind after shutdown: %v", err)
			}
		})
	}
}
