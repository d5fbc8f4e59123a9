//go:build nometrics

package metrics

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestNoMetricsBuild: the slim build keeps the recording API, records
// nothing and refuses a configured endpoint with a clear error.
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
	if err := ServeEndpoint(context.Background(), log, Endpoint{}, m, nil); err != nil {
		t.Fatalf("ServeEndpoint with metrics off: %v", err)
	}
	for _, listen := range []string{"127.0.0.1:0", "unix:/run/tether/metrics.sock"} {
		err := ServeEndpoint(context.Background(), log, Endpoint{Listen: listen}, m, func() (bool, []string) { return true, nil })
		if err == nil || !strings.Contains(err.Error(), "compiled out") || !strings.Contains(err.Error(), listen) {
			t.Fatalf("ServeEndpoint on %s: %v", listen, err)
		}
	}
}
