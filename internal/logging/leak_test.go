package logging

import (
	"testing"

	"github.com/tether-agent/tether/internal/tstest/leakcheck"
)

// TestMain fails the run if goroutines started by the tests outlive them.
func TestMain(m *testing.M) { leakcheck.Main(m) }
