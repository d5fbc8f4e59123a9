package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MetricsUnixPrefix in Metrics.Listen selects a unix socket: only the
// users its mode (Metrics.SocketMode) lets in can read the metrics, where a
// loopback port is open to every local user.
const MetricsUnixPrefix = "unix:"

// DefaultMetricsSocketMode is the socket's mode when SocketMode is empty:
// root only.
const DefaultMetricsSocketMode os.FileMode = 0o600

// SocketFileMode is SocketMode as a file mode; "" is the default. Call it
// on a validated configuration.
func (m MetricsConfig) SocketFileMode() os.FileMode {
	if m.SocketMode == "" {
		return DefaultMetricsSocketMode
	}
	v, err := strconv.ParseUint(m.SocketMode, 8, 32)
	if err != nil {
		return DefaultMetricsSocketMode
	}
	return os.FileMode(v)
}

// checkMetricsEndpoint validates Listen (host:port or unix:/absolute/path)
// and SocketMode, and names the key at fault.
func checkMetricsEndpoint(m MetricsConfig) (key string, err error) {
	path, isUnix := strings.CutPrefix(m.Listen, MetricsUnixPrefix)
	if m.SocketMode != "" {
		v, err := strconv.ParseUint(m.SocketMode, 8, 32)
		switch {
		case err != nil || v > 0o777:
			return "Metrics.SocketMode", fmt.Errorf("%q is not an octal mode such as 0600 or 0660", m.SocketMode)
		case !isUnix:
			return "Metrics.SocketMode", fmt.Errorf("applies only to a unix socket (Metrics.Listen %q%s)", MetricsUnixPrefix, "/run/tether/metrics.sock")
		case v&0o002 != 0:
			return "Metrics.SocketMode", fmt.Errorf("%s lets every local user read the metrics; use a group (0660) instead", m.SocketMode)
		}
	}
	if !isUnix {
		return "Metrics.Listen", checkListen(m.Listen, m.AllowNonLoopback)
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "Metrics.Listen", fmt.Errorf("%q: want %s followed by a clean absolute path", m.Listen, MetricsUnixPrefix)
	}
	if len(path) > 107 { // sun_path holds 108 bytes with the NUL
		return "Metrics.Listen", fmt.Errorf("%q: a unix socket path is at most 107 bytes", m.Listen)
	}
	return "", nil
}
