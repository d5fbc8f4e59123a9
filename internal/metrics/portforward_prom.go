//go:build !nometrics

package metrics

import "github.com/prometheus/client_golang/prometheus"

// portForward holds the port-forwarding collectors.
type portForward struct {
	active  *prometheus.GaugeVec
	opened  *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	denied  *prometheus.CounterVec
	ignored *prometheus.CounterVec
}

func newPortForward(f factory) portForward {
	pf := portForward{
		active: f.gaugeVec("portforward_connections_active", "Port-forward connections open right now, by protocol (tcp, udp).", "proto"),
		opened: f.counterVec("portforward_connections_opened_total", "Port-forward connections opened, by protocol (tcp, udp).", "proto"),
		bytes: f.counterVec("portforward_bytes_total",
			"Port-forward data bytes: in = from the peer to the destination, out = from the destination to the peer.", "direction"),
		denied: f.counterVec("portforward_denied_total",
			"Port-forward connections refused, by reason (allow_list, session_limit, total_limit).", "reason"),
		ignored: f.counterVec("portforward_ignored_total",
			"Port-forward messages answered with an error or ignored, by kind (stray_ack, unknown_connection, unknown_type, overflow, duplicate_new, invalid, reply_dropped).", "kind"),
	}
	for _, p := range []string{"tcp", "udp"} {
		pf.active.WithLabelValues(p)
		pf.opened.WithLabelValues(p)
	}
	pf.bytes.WithLabelValues("in")
	pf.bytes.WithLabelValues("out")
	for _, r := range []string{"allow_list", "session_limit", "total_limit"} {
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

// PortForwardBytes counts data bytes in one direction ("in" or "out").
func (m *Metrics) PortForwardBytes(direction string, n int) {
	if m == nil {
		return
	}
	m.pf.bytes.WithLabelValues(token(direction)).Add(float64(n))
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
