//go:build !nometrics

package metrics

import "testing"

// The identity conflict gauge and counter exist from the first scrape
// (so an alert on them works before anything happened) and follow the
// link's reports; a nil recorder ignores them.
func TestIdentityConflictMetrics(t *testing.T) {
	m := New(BuildInfo{}, Limits{})
	e := serveLive(t, m.Handler(nil))
	steps := []struct {
		name           string
		do             func()
		active, closes float64
	}{
		{"before", func() {}, 0, 0},
		{"closes below the threshold", func() { m.IdentityConflictClose(); m.IdentityConflictClose() }, 0, 2},
		{"episode", func() { m.IdentityConflictClose(); m.IdentityConflict(true) }, 1, 3},
		{"settled", func() { m.IdentityConflict(false) }, 0, 3},
	}
	for _, s := range steps {
		s.do()
		got := scrape(t, e)
		if v := value(t, got, "tether_link_identity_conflict"); v != s.active {
			t.Errorf("%s: tether_link_identity_conflict = %v, want %v", s.name, v, s.active)
		}
		if v := value(t, got, "tether_link_identity_conflict_closes_total"); v != s.closes {
			t.Errorf("%s: tether_link_identity_conflict_closes_total = %v, want %v", s.name, v, s.closes)
		}
	}
	var nilM *Metrics
	nilM.IdentityConflict(true)
	nilM.IdentityConflictClose()
}
