package portforward

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tether-agent/tether/internal/confval"
	"github.com/tether-agent/tether/internal/fdbudget"
	"github.com/tether-agent/tether/internal/identity"
)

// Config is the PortForward section of the configuration file. Key
// names are the field names (internal/config maps the file and the
// TETHER_PORTFORWARD_* variables onto it).
type Config struct {
	Disable bool
	// DialTimeout bounds each dial of a destination (upstream: none).
	DialTimeout confval.Duration
	// IdleTimeout ends a connection when nothing was read from the
	// destination for this long (upstream: a fixed 600 s).
	IdleTimeout confval.Duration
	// MaxConnections limits the open connections of one session,
	// MaxTotal those of the whole device (upstream: no limit). The
	// defaults fit what real tools open through one forward: a browser
	// on the device's web UI, parallel downloads.
	MaxConnections uint32
	MaxTotal       uint32
	// Window is how many device `forward` messages of a connection may
	// wait for the peer's `ack` (upstream: 1).
	Window uint32
	// ReadSize is the largest `forward` body the device sends (upstream
	// 4096).
	ReadSize int
	// Allow lists the destinations a peer may reach, each
	// "[tcp/|udp/]HOST:PORTS" (HOST an address, CIDR or name; PORTS N,
	// N-M or *). Absent (null) allows any destination, as upstream; an
	// empty list allows none.
	Allow []string
}

// Defaults of Config.
const (
	DefaultWindow   = 8
	DefaultReadSize = 16 << 10
)

// DefaultConfig is the section's built-in defaults.
func DefaultConfig() Config {
	return Config{
		DialTimeout:    confval.Duration(10 * time.Second),
		IdleTimeout:    confval.Duration(600 * time.Second),
		MaxConnections: DefaultMaxPerSession,
		MaxTotal:       DefaultMaxTotal,
		Window:         DefaultWindow,
		ReadSize:       DefaultReadSize,
	}
}

// Validate returns every problem of c (confval.Problem values, keys
// relative to the section), joined; nil when there is none.
func (c Config) Validate() error {
	var ps confval.Problems
	confval.CheckDuration(ps.Add, "DialTimeout", c.DialTimeout, 10*time.Millisecond, 10*time.Minute)
	confval.CheckDuration(ps.Add, "IdleTimeout", c.IdleTimeout, 10*time.Millisecond, 24*time.Hour)
	if confval.CheckUint(ps.Add, "MaxTotal", c.MaxTotal, 1, 4096) && c.MaxConnections > c.MaxTotal {
		ps.Add("MaxConnections", "%d is larger than PortForward.MaxTotal (%d)", c.MaxConnections, c.MaxTotal)
	}
	confval.CheckUint(ps.Add, "MaxConnections", c.MaxConnections, 1, 4096)
	confval.CheckUint(ps.Add, "Window", c.Window, 1, 16) // mender-cli queues 20 messages per connection
	if c.ReadSize < 512 || c.ReadSize > 256<<10 {
		ps.Add("ReadSize", "%d is out of range (allowed 512..%d)", c.ReadSize, 256<<10)
	}
	if _, err := ParseAllow(c.Allow); err != nil {
		ps.Add("Allow", "%v", err)
	}
	return ps.Err()
}

// Deps is what the daemon lends the protocol besides its Config.
type Deps struct {
	Log *slog.Logger
	// Identity is the account the sockets belong to (the shells').
	Identity *identity.Identity
	// FDs is the descriptor budget shared with the other protocols.
	FDs      *fdbudget.Budget
	Recorder Recorder
}

// FromConfig builds the protocol from its section of the configuration
// (whose Disable the caller has looked at).
func FromConfig(c Config, d Deps) (*Protocol, error) {
	allow, err := ParseAllow(c.Allow)
	if err != nil {
		return nil, fmt.Errorf("PortForward.Allow: %w", err)
	}
	p := New(Options{
		Log:           d.Log,
		Identity:      d.Identity,
		DialTimeout:   c.DialTimeout.Duration(),
		IdleTimeout:   c.IdleTimeout.Duration(),
		MaxPerSession: int(c.MaxConnections),
		MaxTotal:      int(c.MaxTotal),
		Window:        int(c.Window),
		ReadSize:      c.ReadSize,
		Allow:         allow,
		Recorder:      d.Recorder,
		FDs:           d.FDs,
	})
	if allow == nil {
		p.log.Info("port forwarding allows any destination (PortForward.Allow is not set)")
	}
	return p, nil
}
