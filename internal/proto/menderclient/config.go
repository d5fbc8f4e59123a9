package menderclient

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/tether-agent/tether/internal/confval"
)

// Config is the MenderClient section of the configuration file (key
// names are the field names; internal/config maps the file and the
// TETHER_MENDERCLIENT_* variables onto it).
type Config struct {
	Disable bool
	// Binaries are tried in order; the first that exists runs.
	Binaries []string
	// Timeout ends a command that runs longer (upstream: none).
	Timeout confval.Duration
}

// DefaultBinaries are upstream's candidates, in its order.
func DefaultBinaries() []string { return []string{"/usr/bin/mender-update", "/usr/bin/mender"} }

// DefaultTimeout is Config.Timeout by default.
const DefaultTimeout = 10 * time.Minute

// DefaultConfig is the section's built-in defaults.
func DefaultConfig() Config {
	return Config{Binaries: DefaultBinaries(), Timeout: confval.Duration(DefaultTimeout)}
}

// Validate returns every problem of c (confval.Problem values, keys
// relative to the section), joined; nil when there is none.
func (c Config) Validate() error {
	var ps confval.Problems
	if len(c.Binaries) == 0 {
		ps.Add("Binaries", "at least one path is required")
	}
	for _, b := range c.Binaries {
		if !filepath.IsAbs(b) {
			ps.Add("Binaries", "%q is not an absolute path", b)
		}
	}
	confval.CheckDuration(ps.Add, "Timeout", c.Timeout, 100*time.Millisecond, 24*time.Hour)
	return ps.Err()
}

// Deps is what the daemon lends the protocol besides its Config.
type Deps struct {
	Log *slog.Logger
	// Exec runs a command as a child the daemon's reaper collects.
	Exec func(ctx context.Context, cmd *exec.Cmd, kill func(pid int)) error
}

// FromConfig builds the protocol from its section of the configuration
// (whose Disable the caller has looked at).
func FromConfig(c Config, d Deps) *Protocol {
	return New(Options{Log: d.Log, Binaries: c.Binaries, Timeout: c.Timeout.Duration(), Exec: d.Exec})
}
