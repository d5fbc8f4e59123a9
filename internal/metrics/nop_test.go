//go:build nometrics

package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNoMetricsBuild: the slim build keeps the API, records nothing,
// refuses a configured endpoint with a clear error and still answers
// /healthz through Handler.
func TestNoMetricsBuild(t *testing.T) {
	m := New(BuildInfo{Version: "x"}, Limits{MaxTotal: 1})
	m.SetLimits(Limits{})
	m.SessionOpened(ProtoShell)
	m.SessionClosed(ProtoShell, ReasonUser, time.Second)
	m.LimitRejected(LimitPerUser)
	m.TerminalBytesIn(1)
	m.TerminalBytesOut(1)
	m.FrameIn()
	m.FrameOut()
	m.MalformedFrame("truncated")
	m.LinkUp()
	m.LinkDown()
	m.LinkReconnect()
	m.TokenChanged()

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := Serve(context.Background(), log, "", nil); err != nil {
		t.Fatalf("Serve with metrics off: %v", err)
	}
	err := Serve(context.Background(), log, "127.0.0.1:0", nil)
	if err == nil || !strings.Contains(err.Error(), "compiled out") {
		t.Fatalf("Serve with a listen address: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ServeListener(context.Background(), log, ln, nil); err == nil || !strings.Contains(err.Error(), "compiled out") {
		t.Fatalf("ServeListener: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("ServeListener left the listener open")
	}

	h := m.Handler(func() (bool, []string) { return false, []string{"router"} })
	for path, want := range map[string]int{"/healthz": http.StatusServiceUnavailable, "/metrics": http.StatusNotFound} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}
