//go:build !nometrics

package metrics

import "testing"

// Per-session usage is read at scrape time, one series per session (a
// short id shared by two sessions is reported once, not as a duplicate
// that would fail the scrape), and nothing before a source is set.
func TestSessionUsage(t *testing.T) {
	m := New(BuildInfo{}, Limits{})
	count := func() map[string]map[string]float64 {
		mfs, err := m.reg.Gather()
		if err != nil {
			t.Fatalf("gather: %v", err)
		}
		out := map[string]map[string]float64{}
		for _, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				if mf.GetName() != "tether_session_memory_bytes" && mf.GetName() != "tether_session_cpu_seconds_total" {
					continue
				}
				if out[mf.GetName()] == nil {
					out[mf.GetName()] = map[string]float64{}
				}
				v := mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
				out[mf.GetName()][mt.GetLabel()[0].GetValue()] = v
			}
		}
		return out
	}
	if got := count(); len(got) != 0 {
		t.Fatalf("series before a source: %v", got)
	}
	calls := 0
	m.ObserveSessions(func() []SessionUsage {
		calls++
		return []SessionUsage{{"3f2c9b1e", 1 << 20, 1.5}, {"aa00bb11", 2 << 20, 0.25}, {"aa00bb11", 9, 9}}
	})
	got := count()
	if calls != 1 {
		t.Fatalf("source read %d times for one scrape", calls)
	}
	if got["tether_session_memory_bytes"]["3f2c9b1e"] != 1<<20 || got["tether_session_cpu_seconds_total"]["aa00bb11"] != 0.25 ||
		len(got["tether_session_memory_bytes"]) != 2 {
		t.Fatalf("series %v", got)
	}
}
