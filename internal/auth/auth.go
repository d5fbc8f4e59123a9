// Package auth provides the device's credentials (a JWT and the server URL
// to use it with) as a stream of changes. The normal source is Mender's
// authentication service on the D-Bus system bus (DBus); Static serves a
// fixed token or one read from a file, for setups without that service.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
)

// Credentials are what the daemon needs to connect to the server.
type Credentials struct {
	Token     string
	ServerURL string
}

// Authorized reports whether both the token and the server URL are known;
// upstream treats anything less as unauthorised.
func (c Credentials) Authorized() bool {
	return c.Token != "" && c.ServerURL != ""
}

// String never shows the token, so that Credentials can be printed or
// logged by accident without leaking it.
func (c Credentials) String() string {
	return fmt.Sprintf("{token:%s url:%q}", Fingerprint(c.Token), c.ServerURL)
}

// LogValue makes slog log a fingerprint of the token, never the token.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("token", Fingerprint(c.Token)),
		slog.String("server_url", c.ServerURL),
	)
}

// Fingerprint identifies a token in logs without revealing it: its length
// and the first 8 hex digits of its SHA-256, or "none" when empty.
func Fingerprint(token string) string {
	if token == "" {
		return "none"
	}
	sum := sha256.Sum256([]byte(token))
	return fmt.Sprintf("len=%d,sha256=%s", len(token), hex.EncodeToString(sum[:4]))
}

// Source delivers credentials and their changes.
type Source interface {
	// Run works until ctx is done and then returns nil; other errors are
	// reserved for unusable configuration.
	Run(ctx context.Context) error
	// Updates delivers the current credentials once at start (even when
	// unauthorised) and then every change. The channel has capacity 1 and
	// the newest value wins: a new value replaces one not yet read, and
	// the producer never blocks. It is never closed.
	Updates() <-chan Credentials
	// Refresh asks the provider for a new token. It never blocks; requests
	// are coalesced and rate-limited.
	Refresh()
}

// mailbox is a capacity-1 channel where the newest value replaces an unread
// one, and which suppresses consecutive duplicates.
type mailbox struct {
	ch chan Credentials

	mu        sync.Mutex // serialises producers, so the send below cannot block
	delivered bool
	last      Credentials
}

func newMailbox() *mailbox {
	return &mailbox{ch: make(chan Credentials, 1)}
}

// put delivers c unless it equals the last delivered value; it reports
// whether c was delivered.
func (m *mailbox) put(c Credentials) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.delivered && c == m.last {
		return false
	}
	select {
	case <-m.ch: // drop the stale unread value
	default:
	}
	m.ch <- c
	m.delivered = true
	m.last = c
	return true
}
