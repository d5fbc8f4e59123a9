// Package config holds tether's configuration: a JSON file format that is a
// superset of mender-connect.conf (keys matched case-insensitively), an
// environment overlay with the prefix TETHER_, defaults, normalisation and
// validation with messages that name the offending key.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/confval"
	"github.com/tether-agent/tether/internal/proto/filetransfer"
	"github.com/tether-agent/tether/internal/proto/menderclient"
	"github.com/tether-agent/tether/internal/proto/portforward"
	"github.com/tether-agent/tether/internal/shell"
)

// Default file locations. The fallback is read first, the main file on top.
const (
	DefaultPath         = "/etc/tether/tether.conf"
	DefaultFallbackPath = "/var/lib/tether/tether.conf"
	// DefaultShellsFile lists the shells ShellCommand may name.
	DefaultShellsFile = "/etc/shells"
	// EnvPrefix is the prefix of the environment keys: TETHER_USER, TETHER_SESSIONS_MAXTOTAL, ...
	EnvPrefix = "TETHER"
)

// Values Auth.Source accepts.
const (
	AuthSourceDBus   = "dbus"
	AuthSourceStatic = "static"
)

// Defaults that normalisation or callers refer to.
const (
	DefaultShellCommand    = "/bin/sh"
	DefaultLang            = "C.UTF-8"
	DefaultTerminalWidth   = 80
	DefaultTerminalHeight  = 40
	DefaultExpireAfterIdle = 600 // seconds, when StopExpired and no timeout is set
	DefaultMaxPerUser      = 1
	DefaultMaxTotal        = 16
	DefaultMaxMessageSize  = 1 << 20
)

// Duration is a configuration duration: a Go duration string or a number
// of seconds (confval.Duration).
type Duration = confval.Duration

// redactedToken replaces a non-empty Auth.Token in Redacted output.
const redactedToken = "<redacted>"

// Config is the effective configuration. JSON key names are the Go field
// names; encoding/json matches them case-insensitively.
type Config struct {
	// ShellCommand is the absolute path of the login shell; it must be
	// listed in /etc/shells.
	ShellCommand string
	// ShellArguments defaults to ["--login"] when absent or null; an empty
	// array means no arguments.
	ShellArguments []string
	// User is the account shells run as (required).
	User string
	// Lang is exported to shells as LANG; empty means LANG is not set.
	Lang string

	Terminal TerminalConfig
	Sessions SessionsConfig

	// ServerURL is the server to dial when Auth.Source is static. Upstream
	// deprecated the key (the auth service supplies the URL), so with the
	// dbus source it is ignored with upstream's warning.
	ServerURL string

	Auth      AuthConfig
	Reconnect ReconnectConfig
	Link      LinkConfig
	Metrics   MetricsConfig
	Log       LogConfig

	// Upstream's feature switches, each with its protocol's settings.
	FileTransfer FileTransferConfig
	PortForward  PortForwardConfig
	MenderClient MenderClientConfig

	// Limits is upstream's file-transfer limits tree, parsed as-is.
	Limits LimitsConfig
}

// TerminalConfig is the default terminal size and the proto 1 switch.
type TerminalConfig struct {
	Width   uint16 // columns; 0 → 80
	Height  uint16 // rows; 0 → 40
	Disable bool
}

// SessionsConfig controls shell session limits, expiry and health checks.
type SessionsConfig struct {
	// StopExpired enables expiry. When false both timeouts are forced to 0;
	// when true and both are 0, ExpireAfterIdle becomes 600.
	StopExpired bool
	// ExpireAfter is the absolute lifetime in seconds (0 = none).
	ExpireAfter uint32
	// ExpireAfterIdle is the lifetime since the last input in seconds (0 =
	// none). Unlike upstream both timeouts are enforced together.
	ExpireAfterIdle uint32
	// MaxPerUser limits sessions per user_id; 0 → 1. Must be ≤ MaxTotal
	// when both are set; when only MaxPerUser is, a larger value is capped
	// at MaxTotal, as upstream's fixed device limit caps it.
	MaxPerUser uint32
	// MaxTotal limits running shells on the device (1..1024); upstream has
	// no such key and a fixed limit of 16, the default.
	MaxTotal uint32
	// EvictOldest makes a new session replace the user's oldest one when
	// MaxPerUser is reached, instead of refusing it.
	EvictOldest bool
	// StopGrace is the wait between SIGHUP, SIGTERM and SIGKILL.
	StopGrace Duration
	// PingInterval is the period of shell health-check pings.
	PingInterval Duration
	// PongTimeout ends a shell whose peer has not answered for this long
	// (detaches it, when DetachedTimeout is set).
	PongTimeout Duration
	// DetachedTimeout is how long a shell whose user is gone (the link
	// dropped, the user's connection ended without a stop, the server's
	// recording cut it) is kept for the same user to reattach; 0 ends
	// such a shell once it is found, as before reattach existed.
	DetachedTimeout Duration
	// ProbeGrace is how long a user's terminals have to answer a ping
	// when a new one would be refused or evict one; those silent are
	// deemed gone.
	ProbeGrace Duration
	// ReplayBuffer is how much of a shell's latest output, in bytes, is
	// kept for a user who reattaches (0 = none).
	ReplayBuffer uint32
	// IdleCountsOutput makes shell output count as activity for
	// ExpireAfterIdle, as input always does (upstream: input only).
	IdleCountsOutput bool
	// LoginRecords writes each shell's utmp entry (who, w) and wtmp login
	// and logout (last), with the remote user's id as the host, where
	// the system keeps those files.
	LoginRecords bool
	// Limits are the sessions' containment and resource limits; its
	// fields are keys of this section (Sessions.Containment, ...).
	shell.Limits
}

// MaxFirstPing is the longest Sessions.PingInterval that works with the
// Mender UI: it closes a terminal that heard no ping within 65 s of
// opening it.
const MaxFirstPing = 60 * time.Second

// AuthConfig selects where the device token and server URL come from.
type AuthConfig struct {
	// Source is "dbus" (mender-auth on the system bus) or "static"
	// (ServerURL plus Token or TokenFile).
	Source string
	// TokenFile holds the device JWT for the static source.
	TokenFile string
	// Token is the device JWT for the static source; normally from
	// TETHER_AUTH_TOKEN. Never log it.
	Token string
	// DBusAddress overrides the bus address; empty means the system bus
	// (which honours DBUS_SYSTEM_BUS_ADDRESS).
	DBusAddress string
}

// ReconnectConfig is the redial policy (internal/reconnect): exponential
// backoff with full jitter between failed dials, a random delay before the
// first redial after a drop, Retry-After obeyed.
type ReconnectConfig struct {
	BackoffBase Duration
	// BackoffMax caps every wait: after an outage the fleet is back
	// within about this long of the server's return, and the returning
	// server sees about fleet size ÷ BackoffMax dials a second.
	BackoffMax Duration
	// FirstJitter spreads the first redial after a long-lived link drops
	// over [0, FirstJitter), so a server that sheds its sockets does not
	// get them all back in the same instant.
	FirstJitter Duration
	// StartJitter spreads the first dial after the daemon starts over
	// [0, StartJitter), so devices that boot together (power restored at
	// a site) do not dial in the same instant; 0 dials at once.
	StartJitter Duration
}

// LinkConfig tunes the websocket.
type LinkConfig struct {
	// PingInterval is how often tether pings the server.
	PingInterval Duration
	// ReadTimeout ends a link that received nothing for this long; it must
	// exceed PingInterval.
	ReadTimeout Duration
	// WriteTimeout bounds every frame write.
	WriteTimeout Duration
	// MaxMessageSize is the largest inbound websocket message in bytes.
	MaxMessageSize int
	// LatencyTarget bounds the bytes on their way to the server to what
	// the path drains in about this long, so a keystroke's echo does not
	// wait behind seconds of another session's output on a slow link; 0
	// turns the bound off.
	LatencyTarget Duration
	// CongestionControl is the TCP congestion control of the link's
	// socket (e.g. "bbr"); "" keeps the kernel's default.
	CongestionControl string
	// CAFile is an optional PEM file of CAs trusted for wss:// in addition
	// to the system pool. Upstream's ServerCertificate is not read: it is
	// deprecated there and must not change what a legacy file means.
	CAFile string
	// InsecureSkipVerify turns TLS certificate verification off (testing
	// only). Upstream's SkipVerify is deprecated and ignored, so a legacy
	// file can never weaken TLS.
	InsecureSkipVerify bool
}

// MetricsConfig is the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is host:port, or unix:/path for a unix socket; empty
	// disables the endpoint.
	Listen string
	// AllowNonLoopback permits a Listen host other than a loopback address.
	AllowNonLoopback bool
	// SocketMode is the octal mode of a unix socket; "" = 0600.
	SocketMode string
}

// LogConfig selects the log level and the stderr format.
type LogConfig struct {
	Level  string // error, warn, info (default), debug, trace
	Format string // text (default) or json
	// Journal: auto (default: the journal's native protocol when running
	// under systemd with journald), on, or off (always stderr).
	Journal string
}

// FeatureConfig is an upstream per-protocol switch.
type FeatureConfig struct {
	Disable bool
}

// Default returns the built-in defaults: everything but User, which has no
// default. Load starts from this before reading any file.
func Default() *Config {
	return &Config{
		ShellCommand:   DefaultShellCommand,
		ShellArguments: []string{"--login"},
		Lang:           DefaultLang,
		Terminal: TerminalConfig{
			Width:  DefaultTerminalWidth,
			Height: DefaultTerminalHeight,
		},
		Sessions: SessionsConfig{
			// ExpireAfterIdle stays 0 here: the 600 s default applies only
			// when the files leave ExpireAfter at 0 as well (normalize).
			StopExpired:  true,
			MaxPerUser:   DefaultMaxPerUser,
			MaxTotal:     DefaultMaxTotal,
			StopGrace:    Duration(2 * time.Second),
			PingInterval: Duration(60 * time.Second),
			PongTimeout:  Duration(65 * time.Second),
			// Long enough to notice a dead terminal, log in again and
			// reopen it; no longer than the idle expiry upstream
			// applies by default, so a shell nobody comes back to ends
			// as soon as an idle one would.
			DetachedTimeout: Duration(10 * time.Minute),
			ProbeGrace:      Duration(1500 * time.Millisecond),
			ReplayBuffer:    DefaultReplayBuffer,
			LoginRecords:    true,
			Limits:          shell.DefaultLimits(),
		},
		Auth: AuthConfig{Source: AuthSourceDBus},
		Reconnect: ReconnectConfig{
			BackoffBase: Duration(time.Second),
			BackoffMax:  Duration(time.Minute),
			FirstJitter: Duration(time.Second),
			StartJitter: Duration(time.Second),
		},
		Link: LinkConfig{
			PingInterval:   Duration(50 * time.Second),
			ReadTimeout:    Duration(75 * time.Second),
			WriteTimeout:   Duration(10 * time.Second),
			MaxMessageSize: DefaultMaxMessageSize,
			LatencyTarget:  Duration(DefaultLatencyTarget),
		},
		Log:          LogConfig{Level: "info", Format: "text", Journal: "auto"},
		FileTransfer: filetransfer.DefaultConfig(),
		PortForward:  portforward.DefaultConfig(),
		MenderClient: menderclient.DefaultConfig(),
	}
}

// DefaultLatencyTarget is Link.LatencyTarget's default: a keystroke's echo
// waits about this long behind a flood, plus the path's round trip.
const DefaultLatencyTarget = 150 * time.Millisecond

// DefaultReplayBuffer keeps a screen or two of a busy shell (a full
// 200×50 screen of colored text is some 30 KiB).
const DefaultReplayBuffer = 64 << 10

// MaxReplayBuffer bounds Sessions.ReplayBuffer: every shell may hold that
// much (16 shells × 4 MiB = 64 MiB).
const MaxReplayBuffer = 4 << 20

// capPingInterval lowers a Sessions.PingInterval above MaxFirstPing, with
// a warning: longer ones let the Mender UI close every terminal.
func (c *Config) capPingInterval() []string {
	s := &c.Sessions
	if s.PingInterval.Duration() <= MaxFirstPing {
		return nil
	}
	w := fmt.Sprintf("Sessions.PingInterval %s is above %s: the Mender UI closes a terminal that hears no ping within 65 s; using %s",
		s.PingInterval, confval.FormatDuration(MaxFirstPing), confval.FormatDuration(MaxFirstPing))
	s.PingInterval = Duration(MaxFirstPing)
	return []string{w}
}

// IdleTimeout is the session idle limit; 0 means off. It applies the
// StopExpired rules itself, so it is right even on an unnormalised Config.
func (c *Config) IdleTimeout() time.Duration {
	s := c.Sessions
	if !s.StopExpired {
		return 0
	}
	idle := s.ExpireAfterIdle
	if idle == 0 && s.ExpireAfter == 0 {
		idle = DefaultExpireAfterIdle
	}
	return time.Duration(idle) * time.Second
}

// AbsoluteTimeout is the session lifetime limit; 0 means off.
func (c *Config) AbsoluteTimeout() time.Duration {
	if !c.Sessions.StopExpired {
		return 0
	}
	return time.Duration(c.Sessions.ExpireAfter) * time.Second
}

// Redacted is the effective configuration as indented JSON with a non-empty
// Auth.Token replaced by "<redacted>", for `tether check-config`.
func (c *Config) Redacted() ([]byte, error) {
	cp := *c
	if cp.Auth.Token != "" {
		cp.Auth.Token = redactedToken
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<redacted>" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(&cp); err != nil {
		return nil, fmt.Errorf("rendering configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// normalize applies the upstream "0 means default" rules and the expiry
// rules of spec 3.6, and lower-cases enumerated values.
func (c *Config) normalize() {
	if c.ShellArguments == nil {
		c.ShellArguments = []string{"--login"}
	}
	if c.Terminal.Width == 0 {
		c.Terminal.Width = DefaultTerminalWidth
	}
	if c.Terminal.Height == 0 {
		c.Terminal.Height = DefaultTerminalHeight
	}
	if c.Sessions.MaxPerUser == 0 {
		c.Sessions.MaxPerUser = DefaultMaxPerUser
	}
	s := &c.Sessions
	switch {
	case !s.StopExpired:
		s.ExpireAfter, s.ExpireAfterIdle = 0, 0
	case s.ExpireAfter == 0 && s.ExpireAfterIdle == 0:
		s.ExpireAfterIdle = DefaultExpireAfterIdle
	}
	c.Auth.Source = strings.ToLower(c.Auth.Source)
	c.Log.Level = strings.ToLower(c.Log.Level)
	c.Log.Format = strings.ToLower(c.Log.Format)
	c.Log.Journal = strings.ToLower(c.Log.Journal)
}
