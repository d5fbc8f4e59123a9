// Package metrics exposes what tether does as Prometheus metrics, on an
// endpoint that is off unless configured, together with a /healthz that
// reflects the same loop health the systemd watchdog uses.
//
// Metrics observe; they never steer. The recorder methods take no user or
// session identifiers, so no label can ever hold one, and every label value
// is either one of a fixed set or squeezed into a short token so a
// misbehaving peer cannot grow the series count.
//
// Building with -tags nometrics replaces the implementation with no-ops
// and drops client_golang from the binary; the API stays the same, except
// for the HTTP handlers: the daemon asks ServeEndpoint to serve, so that
// only the full build links net/http.
package metrics

import (
	"os"
	"time"
)

// Reasons a session ends: the reason label of
// tether_sessions_closed_total. Anything else is recorded as ReasonOther.
const (
	ReasonUser            = "user"             // the user closed it
	ReasonStop            = "stop"             // the server sent stop (the user went away)
	ReasonIdleExpired     = "idle_expired"     // no input for the idle timeout
	ReasonAbsoluteExpired = "absolute_expired" // the absolute lifetime ran out
	ReasonShellExit       = "shell_exit"       // the shell exited by itself
	ReasonHealthTimeout   = "health_timeout"   // the peer stopped answering pings
	ReasonTokenCleared    = "token_cleared"    // the device lost its credentials
	ReasonShutdown        = "shutdown"         // the daemon is stopping
	ReasonEvicted         = "evicted"          // replaced by a newer session of the same user
	ReasonDetachedExpired = "detached_expired" // its peer was gone and nobody reattached it in time
	ReasonMemoryLimit     = "memory_limit"     // it reached its memory ceiling and was killed whole
	ReasonOther           = other              // anything not listed above
)

// other replaces label values outside the expected set.
const other = "other"

// Reasons lists the known close reasons, in a fixed order.
func Reasons() []string {
	return []string{
		ReasonUser, ReasonStop, ReasonIdleExpired, ReasonAbsoluteExpired, ReasonShellExit,
		ReasonHealthTimeout, ReasonTokenCleared, ReasonShutdown, ReasonEvicted, ReasonDetachedExpired, ReasonMemoryLimit, ReasonOther,
	}
}

// Why a shell is detached (its peer deemed gone): the reason label of
// tether_sessions_detached_total.
const (
	DetachLinkDown  = "link_down"  // the device's link dropped
	DetachNoAnswer  = "no_answer"  // its peer did not answer a probe
	DetachHealth    = "health"     // its peer stopped answering pings
	DetachByteLimit = "byte_limit" // the server's session recording cut it
	DetachUserGone  = "user_gone"  // the server said the user disconnected
)

// DetachReasons lists the known detach reasons, in a fixed order.
func DetachReasons() []string {
	return []string{DetachLinkDown, DetachNoAnswer, DetachHealth, DetachByteLimit, DetachUserGone, ReasonOther}
}

// How a detached shell got a peer again: the reason label of
// tether_sessions_reattached_total.
const (
	ReattachResumed     = "resumed"      // its own peer answered after all
	ReattachNewTerminal = "new_terminal" // its user opened a terminal again
)

// Limits that reject a new session: the limit label of
// tether_session_limit_rejections_total.
const (
	LimitPerUser = "per_user"
	LimitTotal   = "total"
)

// ProtoShell is the proto label of shell sessions.
const ProtoShell = "shell"

// Endpoint says where the metrics endpoint listens.
type Endpoint struct {
	// Listen is host:port (a bare port means 127.0.0.1), or unix:/path.
	Listen string
	// SocketMode is a unix socket's mode; 0 means 0600.
	SocketMode os.FileMode
}

// BuildInfo becomes the labels of tether_build_info.
type BuildInfo struct {
	Version, Commit, GoVersion string
}

// Limits are the configured session limits, exported as gauges so that a
// dashboard can show usage against them. Zero means "none".
type Limits struct {
	MaxPerUser, MaxTotal         int
	IdleTimeout, AbsoluteTimeout time.Duration
}

// knownReason maps reason to itself when it is one of the constants.
func knownReason(reason string) string {
	for _, r := range Reasons() {
		if reason == r {
			return r
		}
	}
	return other
}

func knownLimit(limit string) string {
	if limit == LimitPerUser || limit == LimitTotal {
		return limit
	}
	return other
}

// token keeps free-form label values (protocol names, malformed-frame
// kinds) bounded: a short lower-case identifier, or "other".
func token(s string) string {
	if s == "" || len(s) > 32 {
		return other
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return other
		}
	}
	return s
}
