package daemon

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/tstest/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// Shutdown gives every shell the configured grace per signal step; the
// budget covers it, and the unit's TimeoutStopSec covers the budget for the
// default grace (the unit's comment says "after the configured grace").
func TestShutdownBudgetKeepsStopGrace(t *testing.T) {
	tests := []struct {
		grace time.Duration
		want  time.Duration
	}{
		{200 * time.Millisecond, 6400 * time.Millisecond},
		{2 * time.Second, 10 * time.Second},
		{10 * time.Second, 26 * time.Second},
	}
	for _, tt := range tests {
		if got := shutdownBudget(tt.grace); got != tt.want || got < 2*tt.grace {
			t.Errorf("shutdownBudget(%v) = %v, want %v", tt.grace, got, tt.want)
		}
	}
	stop := unitTimeoutStop(t)
	def := config.Default().Sessions.StopGrace.Duration()
	if stop <= shutdownBudget(def) {
		t.Fatalf("TimeoutStopSec=%v does not cover the shutdown budget %v of the default grace %v", stop, shutdownBudget(def), def)
	}
}

func unitTimeoutStop(t *testing.T) time.Duration {
	f, err := os.Open("../../systemd/tether.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "TimeoutStopSec="); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("TimeoutStopSec=%s: %v", v, err)
			}
			return d
		}
	}
	t.Fatal("no TimeoutStopSec in tether.service")
	return 0
}
