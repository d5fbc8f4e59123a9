//go:build !nometrics

package metrics

import "github.com/prometheus/client_golang/prometheus"

// portForwardBytesStep is the step of tether_portforward_bytes_total, for
// the same reason as the terminal's (coarse.go): an SSH keystroke through
// a forward is one packet of 36 bytes or so each way, and a local user
// polling the endpoint would otherwise read the length and rhythm of what
// is typed. Forwarded traffic is bulk, so the step is coarser than the
// terminal's KiB: it moves about once per hundred keystrokes.
const portForwardBytesStep = 4096

// portForward holds the port-forwarding collectors.
type portForward struct {
	active   *prometheus.GaugeVec
	opened   *prometheus.CounterVec
	bytesIn  *coarseCounter
	bytesOut *coarseCounter
	denied   *prometheus.CounterVec
	ignored  *prometheus.CounterVec
}

func newPortForward(f factory) portForward {
	bytes := f.counterVec("portforward_bytes_total",
		"Port-forward data bytes in steps of 4 KiB (so that single keystrokes do not show): in = from the peer to the destination, out = from the destination to the peer.", "direction")
	pf := portForward{
		active:   f.gaugeVec("portforward_connections_active", "Port-forward connections open right now, by protocol (tcp, udp).", "proto"),
		opened:   f.counterVec("portforward_connections_opened_total", "Port-forward connections opened, by protocol (tcp, udp).", "proto"),
		bytesIn:  newCoarse(bytes.WithLabelValues("in"), portForwardBytesStep),
		bytesOut: newCoarse(bytes.WithLabelValues("out"), portForwardBytesStep),
		denied: f.counterVec("portforward_denied_total",
			"Port-forward connections refused, by reason (allow_list, session_limit, total_limit, fd_limit).", "reason"),
		ignored: f.counterVec("portforward_ignored_total",
			"Port-forward messages answered with an error or ignored, by kind (stray_ack, unknown_connection, unknown_type, overflow, duplicate_new, invalid, too_long, reply_dropped).", "kind"),
	}
	for _, p := range []string{"tcp", "udp"} {
		pf.active.WithLabelValues(p)
		pf.opened.WithLabelValues(p)
	}
	for _, r := range []string{"allow_list", "session_limit", "total_limit", "fd_limit"} {
		pf.denied.WithLabelValues(r)
	}
	return pf
}

// PortForwardOpened counts a connection that was dialed.
func (m *Metrics) PortForwardOpened(protocol string) {
	if m == nil {
		return
	}
	m.pf.active.WithLabelValues(token(protocol)).Inc()
	m.pf.opened.WithLabelValues(token(protocol)).Inc()
}

// PortForwardClosed counts the end of a connection PortForwardOpened counted.
func (m *Metrics) PortForwardClosed(protocol string) {
	if m == nil {
		return
	}
	m.pf.active.WithLabelValues(token(protocol)).Dec()
}

// PortForwardBytes counts data bytes in one direction ("in" or "out");
// the series show them in whole steps of portForwardBytesStep.
func (m *Metrics) PortForwardBytes(direction string, n int) {
	if m == nil || n <= 0 {
		return
	}
	switch direction {
	case "in":
		m.pf.bytesIn.add(uint64(n))
	case "out":
		m.pf.bytesOut.add(uint64(n))
	}
}

// PortForwardDenied counts a refused connection.
func (m *Metrics) PortForwardDenied(reason string) {
	if m == nil {
		return
	}
	m.pf.denied.WithLabelValues(token(reason)).Inc()
}

// PortForwardIgnored counts a peer message that was answered with an
// error or ignored.
func (m *Metrics) PortForwardIgnored(kind string) {
	if m == nil {
		return
	}
	m.pf.ignored.WithLabelValues(token(kind)).Inc()
}
