package config

import (
	"path/filepath"
	"time"

	"github.com/tether-agent/tether/internal/proto/portforward"
)

// PortForwardConfig is port forwarding (proto 3).
type PortForwardConfig struct {
	Disable bool
	// DialTimeout bounds each dial of a destination (upstream: none).
	DialTimeout Duration
	// IdleTimeout ends a connection when nothing was read from the
	// destination for this long (upstream: a fixed 600 s).
	IdleTimeout Duration
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

// MenderClientConfig is the Mender client commands protocol (proto 4).
type MenderClientConfig struct {
	Disable bool
	// Binaries are tried in order; the first that exists runs.
	Binaries []string
	// Timeout ends a command that runs longer (upstream: none).
	Timeout Duration
}

// Defaults of the protocol sections.
const (
	DefaultPortForwardMaxConnections = portforward.DefaultMaxPerSession
	DefaultPortForwardMaxTotal       = portforward.DefaultMaxTotal
	DefaultPortForwardWindow         = 8
	DefaultPortForwardReadSize       = 16 << 10
)

// DefaultMenderBinaries are upstream's candidates, in its order.
func DefaultMenderBinaries() []string { return []string{"/usr/bin/mender-update", "/usr/bin/mender"} }

func defaultPortForward() PortForwardConfig {
	return PortForwardConfig{
		DialTimeout:    Duration(10 * time.Second),
		IdleTimeout:    Duration(600 * time.Second),
		MaxConnections: DefaultPortForwardMaxConnections,
		MaxTotal:       DefaultPortForwardMaxTotal,
		Window:         DefaultPortForwardWindow,
		ReadSize:       DefaultPortForwardReadSize,
	}
}

func defaultMenderClient() MenderClientConfig {
	return MenderClientConfig{Binaries: DefaultMenderBinaries(), Timeout: Duration(10 * time.Minute)}
}

func (c *Config) validateProtocols(add func(key, format string, args ...any)) {
	p := c.PortForward
	checkDuration(add, "PortForward.DialTimeout", p.DialTimeout, 10*time.Millisecond, 10*time.Minute)
	checkDuration(add, "PortForward.IdleTimeout", p.IdleTimeout, 10*time.Millisecond, 24*time.Hour)
	if checkUint(add, "PortForward.MaxTotal", p.MaxTotal, 1, 4096) && p.MaxConnections > p.MaxTotal {
		add("PortForward.MaxConnections", "%d is larger than PortForward.MaxTotal (%d)", p.MaxConnections, p.MaxTotal)
	}
	checkUint(add, "PortForward.MaxConnections", p.MaxConnections, 1, 4096)
	checkUint(add, "PortForward.Window", p.Window, 1, 16) // mender-cli queues 20 messages per connection
	if p.ReadSize < 512 || p.ReadSize > 256<<10 {
		add("PortForward.ReadSize", "%d is out of range (allowed 512..%d)", p.ReadSize, 256<<10)
	}
	if _, err := portforward.ParseAllow(p.Allow); err != nil {
		add("PortForward.Allow", "%v", err)
	}
	m := c.MenderClient
	if len(m.Binaries) == 0 {
		add("MenderClient.Binaries", "at least one path is required")
	}
	for _, b := range m.Binaries {
		if !filepath.IsAbs(b) {
			add("MenderClient.Binaries", "%q is not an absolute path", b)
		}
	}
	checkDuration(add, "MenderClient.Timeout", m.Timeout, 100*time.Millisecond, 24*time.Hour)
}
