package config

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/confval"
)

// Validate checks the configuration and returns every problem found, joined
// with errors.Join; each message starts with the key it is about.
// shellsFile is the list of allowed shells ("" = /etc/shells).
func (c *Config) Validate(shellsFile string) error {
	if shellsFile == "" {
		shellsFile = DefaultShellsFile
	}
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	addErr := func(key string, err error) { errs = append(errs, fmt.Errorf("%s: %w", key, err)) }

	if err := checkShell(c.ShellCommand, shellsFile); err != nil {
		addErr("ShellCommand", err)
	}
	if c.User == "" {
		add("User", "required (set it in the configuration file or %s_USER)", EnvPrefix)
	} else if _, err := user.Lookup(c.User); err != nil {
		addErr("User", err)
	}
	if strings.ContainsFunc(c.Lang, func(r rune) bool { return r < ' ' || r == '=' || r == 0x7f }) {
		add("Lang", "%q contains '=' or a control character", c.Lang)
	}

	s := c.Sessions
	// Comparing with an out-of-range MaxTotal would only repeat that error.
	if confval.CheckUint(add, "Sessions.MaxTotal", s.MaxTotal, 1, 1024) && s.MaxPerUser > s.MaxTotal {
		add("Sessions.MaxPerUser", "%d is larger than Sessions.MaxTotal (%d)", s.MaxPerUser, s.MaxTotal)
	}
	confval.CheckDuration(add, "Sessions.StopGrace", s.StopGrace, 10*time.Millisecond, time.Minute)
	confval.CheckDuration(add, "Sessions.PingInterval", s.PingInterval, 100*time.Millisecond, time.Hour)
	confval.CheckDurationAbove(add, "Sessions.PongTimeout", s.PongTimeout, "Sessions.PingInterval", s.PingInterval, 24*time.Hour)
	confval.CheckDuration(add, "Sessions.DetachedTimeout", s.DetachedTimeout, 0, 24*time.Hour)
	confval.CheckDuration(add, "Sessions.ProbeGrace", s.ProbeGrace, 100*time.Millisecond, 30*time.Second)
	confval.CheckUint(add, "Sessions.ReplayBuffer", s.ReplayBuffer, 0, MaxReplayBuffer)
	if err := s.Limits.Validate(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, fmt.Errorf("Sessions.%w", e))
		}
	}

	c.validateServer(add, addErr)
	c.validateAuth(add)

	r := c.Reconnect
	confval.CheckDuration(add, "Reconnect.BackoffBase", r.BackoffBase, 10*time.Millisecond, 10*time.Minute)
	switch {
	case r.BackoffMax < r.BackoffBase:
		add("Reconnect.BackoffMax", "%s must be at least Reconnect.BackoffBase (%s)", r.BackoffMax, r.BackoffBase)
	case r.BackoffMax.Duration() > 24*time.Hour:
		add("Reconnect.BackoffMax", "%s is out of range (at most 24h)", r.BackoffMax)
	}
	confval.CheckDuration(add, "Reconnect.FirstJitter", r.FirstJitter, 0, 10*time.Minute)
	confval.CheckDuration(add, "Reconnect.StartJitter", r.StartJitter, 0, 10*time.Minute)

	l := c.Link
	confval.CheckDuration(add, "Link.PingInterval", l.PingInterval, 10*time.Millisecond, time.Hour)
	confval.CheckDurationAbove(add, "Link.ReadTimeout", l.ReadTimeout, "Link.PingInterval", l.PingInterval, 24*time.Hour)
	confval.CheckDuration(add, "Link.WriteTimeout", l.WriteTimeout, 10*time.Millisecond, 10*time.Minute)
	confval.CheckDuration(add, "Link.LatencyTarget", l.LatencyTarget, 0, time.Minute)
	if cc := l.CongestionControl; len(cc) > 15 || strings.ContainsFunc(cc, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) {
		add("Link.CongestionControl", "%q is not a congestion control name (see /proc/sys/net/ipv4/tcp_available_congestion_control)", cc)
	}
	if l.MaxMessageSize < 64<<10 || l.MaxMessageSize > 8<<20 {
		add("Link.MaxMessageSize", "%d is out of range (allowed %d..%d, 64 KiB..8 MiB)", l.MaxMessageSize, 64<<10, 8<<20)
	}

	if c.Metrics.Listen != "" {
		if key, err := checkMetricsEndpoint(c.Metrics); err != nil {
			addErr(key, err)
		}
	}

	c.validateProtocols(add)

	switch c.Log.Level {
	case "error", "warn", "info", "debug", "trace":
	default:
		add("Log.Level", "%q is not allowed (allowed: error, warn, info, debug, trace)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("Log.Format", "%q is not allowed (allowed: text, json)", c.Log.Format)
	}
	switch c.Log.Journal {
	case "auto", "on", "off":
	default:
		add("Log.Journal", "%q is not allowed (allowed: auto, on, off)", c.Log.Journal)
	}
	return errors.Join(errs...)
}

func (c *Config) validateServer(add func(key, format string, args ...any), addErr func(key string, err error)) {
	// Upstream deprecated ServerURL; only the static source reads it, so
	// only then can a bad value matter.
	if c.ServerURL != "" && c.Auth.Source == AuthSourceStatic {
		u, err := url.Parse(c.ServerURL)
		switch {
		case err != nil:
			add("ServerURL", "%q is not a URL: %v", c.ServerURL, err)
		case !isServerScheme(u.Scheme) || u.Host == "":
			add("ServerURL", "%q must be an http, https, ws or wss URL with a host", c.ServerURL)
		}
	}
	if f := c.Link.CAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			addErr("Link.CAFile", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			add("Link.CAFile", "%s contains no PEM certificate", f)
		}
	}
}

func (c *Config) validateAuth(add func(key, format string, args ...any)) {
	a := c.Auth
	switch a.Source {
	case AuthSourceDBus:
	case AuthSourceStatic:
		if c.ServerURL == "" {
			add("ServerURL", "required when Auth.Source is %q", AuthSourceStatic)
		}
		switch {
		case a.Token == "" && a.TokenFile == "":
			add("Auth.TokenFile", "Auth.TokenFile or Auth.Token (%s_AUTH_TOKEN) is required when Auth.Source is %q", EnvPrefix, AuthSourceStatic)
		case a.Token != "" && a.TokenFile != "":
			// Two sources would leave it unclear which token is in use.
			add("Auth.Token", "set only one of Auth.Token and Auth.TokenFile")
		case a.TokenFile != "":
			if f, err := os.Open(a.TokenFile); err != nil {
				add("Auth.TokenFile", "%v", err)
			} else {
				f.Close()
			}
		}
	default:
		add("Auth.Source", "%q is not allowed (allowed: %s, %s)", a.Source, AuthSourceDBus, AuthSourceStatic)
	}
}

func isServerScheme(s string) bool {
	switch strings.ToLower(s) {
	case "http", "https", "ws", "wss":
		return true
	}
	return false
}

// checkShell applies upstream's rules: absolute, an existing executable
// file, and an exact line of the shells file; if that file cannot be read
// only /bin/sh is allowed.
func checkShell(cmd, shellsFile string) error {
	if cmd == "" {
		return errors.New("required")
	}
	if !filepath.IsAbs(cmd) {
		return fmt.Errorf("%q is not an absolute path", cmd)
	}
	fi, err := os.Stat(cmd)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", cmd)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable (mode %s)", cmd, fi.Mode().Perm())
	}
	listed, err := inShells(cmd, shellsFile)
	if err != nil {
		if cmd == DefaultShellCommand {
			return nil
		}
		return fmt.Errorf("%s is not allowed: %w; without it only %s is accepted", cmd, err, DefaultShellCommand)
	}
	if !listed {
		return fmt.Errorf("%s is not listed in %s", cmd, shellsFile)
	}
	return nil
}

func inShells(cmd, shellsFile string) (bool, error) {
	f, err := os.Open(shellsFile)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == cmd {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("reading %s: %w", shellsFile, err)
	}
	return false, nil
}

// checkListen accepts host:port with a numeric port; unless allowed, the
// host must be a loopback address (an empty host means all interfaces).
func checkListen(listen string, allowNonLoopback bool) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", listen, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not a number in 0..65535", listen, port)
	}
	if !allowNonLoopback && !isLoopback(host) {
		return fmt.Errorf("%q is not a loopback address; set Metrics.AllowNonLoopback to serve metrics on other interfaces", listen)
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.IsLoopback()
}

// unjoin splits an errors.Join into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
