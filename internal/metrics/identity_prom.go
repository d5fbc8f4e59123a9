//go:build !nometrics

package metrics

import "github.com/prometheus/client_golang/prometheus"

// identity holds the collectors of the identity conflict detector
// (another agent connected with this device's identity; see internal/link).
type identity struct {
	conflict prometheus.Gauge
	closes   prometheus.Counter
}

func newIdentity(f factory) identity {
	return identity{
		conflict: f.gauge("link_identity_conflict",
			"1 while the server keeps closing the link right after it opens, as it does when another agent "+
				"with this device's identity is connected (mender-connect still enabled?); else 0."),
		closes: f.counter("link_identity_conflict_closes_total",
			"Connections the server ended without a close frame within seconds of opening, the way it drops "+
				"a device connection when another one with the same identity arrives."),
	}
}

// IdentityConflict sets tether_link_identity_conflict.
func (m *Metrics) IdentityConflict(active bool) {
	if m == nil {
		return
	}
	v := 0.0
	if active {
		v = 1
	}
	m.identity.conflict.Set(v)
}

// IdentityConflictClose counts a connection the server dropped right
// after it opened.
func (m *Metrics) IdentityConflictClose() {
	if m == nil {
		return
	}
	m.identity.closes.Inc()
}
