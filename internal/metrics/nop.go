//go:build nometrics

package metrics

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Metrics is the no-op stand-in of the nometrics build: every method does
// nothing and client_golang is not linked.
type Metrics struct{}

// New returns a Metrics that records nothing.
func New(BuildInfo, Limits) *Metrics { return &Metrics{} }

// SetLimits does nothing in the nometrics build.
func (*Metrics) SetLimits(Limits) {}

// SessionOpened does nothing in the nometrics build.
func (*Metrics) SessionOpened(string) {}

// SessionClosed does nothing in the nometrics build.
func (*Metrics) SessionClosed(string, string, time.Duration) {}

// LimitRejected does nothing in the nometrics build.
func (*Metrics) LimitRejected(string) {}

// SessionDetached does nothing in the nometrics build.
func (*Metrics) SessionDetached(string) {}

// SessionReattached does nothing in the nometrics build.
func (*Metrics) SessionReattached(string) {}

// SessionsRestored does nothing in the nometrics build.
func (*Metrics) SessionsRestored(int) {}

// DetachedSessions does nothing in the nometrics build.
func (*Metrics) DetachedSessions(int) {}

// TerminalBytesIn does nothing in the nometrics build.
func (*Metrics) TerminalBytesIn(int) {}

// TerminalBytesOut does nothing in the nometrics build.
func (*Metrics) TerminalBytesOut(int) {}

// FrameIn does nothing in the nometrics build.
func (*Metrics) FrameIn() {}

// FrameOut does nothing in the nometrics build.
func (*Metrics) FrameOut() {}

// MalformedFrame does nothing in the nometrics build.
func (*Metrics) MalformedFrame(string) {}

// LinkUp does nothing in the nometrics build.
func (*Metrics) LinkUp() {}

// LinkDown does nothing in the nometrics build.
func (*Metrics) LinkDown() {}

// LinkReconnect does nothing in the nometrics build.
func (*Metrics) LinkReconnect() {}

// TokenChanged does nothing in the nometrics build.
func (*Metrics) TokenChanged() {}

// errCompiledOut says why a configured endpoint cannot be served.
func errCompiledOut(listen string) error {
	return errors.New("metrics endpoint " + listen + " is configured but metrics are compiled out (built with -tags nometrics); clear Metrics.Listen or use a full build")
}

// ServeEndpoint returns nil for an empty Listen and an error otherwise:
// the endpoint, /healthz included, does not exist in the nometrics build,
// which links no HTTP server.
func ServeEndpoint(_ context.Context, _ *slog.Logger, ep Endpoint, _ *Metrics, _ func() (bool, []string)) error {
	if ep.Listen == "" {
		return nil
	}
	return errCompiledOut(ep.Listen)
}
