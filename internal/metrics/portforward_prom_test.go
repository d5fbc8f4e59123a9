//go:build !nometrics

package metrics

import "testing"

// The forwarded byte counters move only in whole steps: an SSH keystroke
// through a forward is one 36-byte packet each way, and a local user
// polling /metrics must not see it (nor its timing).
func TestPortForwardBytesCoarse(t *testing.T) {
	tests := []struct {
		name    string
		writes  []int
		wantIn  float64
		wantOut float64
	}{
		{"one keystroke does not show", []int{36}, 0, 0},
		{"a hundred keystrokes do not show", repeat(36, 100), 0, 0},
		{"a step shows once reached", []int{portForwardBytesStep - 1, 1}, portForwardBytesStep, portForwardBytesStep},
		{"nothing is lost, only delayed", append(repeat(36, 1000), 0, -7), 36000 / portForwardBytesStep * portForwardBytesStep, 36000 / portForwardBytesStep * portForwardBytesStep},
		{"bulk in whole steps", []int{1 << 20, 100}, 1 << 20, 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(BuildInfo{}, Limits{})
			e := serveLive(t, m.Handler(nil))
			for _, n := range tt.writes {
				m.PortForwardBytes("in", n)
				m.PortForwardBytes("out", n)
			}
			mfs := scrape(t, e)
			if got := value(t, mfs, "tether_portforward_bytes_total", "direction", "in"); got != tt.wantIn {
				t.Errorf("in = %v, want %v", got, tt.wantIn)
			}
			if got := value(t, mfs, "tether_portforward_bytes_total", "direction", "out"); got != tt.wantOut {
				t.Errorf("out = %v, want %v", got, tt.wantOut)
			}
		})
	}
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}
