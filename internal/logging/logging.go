// Package logging builds tether's *slog.Logger: structured records sent to
// journald over its native protocol when the daemon runs under systemd,
// text (or JSON) on stderr otherwise.
//
// In the journal every attribute becomes a field of its own, prefixed
// TETHER_ and upper-cased (session_id → TETHER_SESSION_ID), so an audit
// query is a field match: `journalctl -t tether TETHER_EVENT=session_close
// TETHER_USER_ID=...`.
//
// Nothing here filters secrets: a handler cannot tell a token from any other
// string, so the rule lives with the callers — tether never passes a token,
// a credential or terminal content to a logger (a length or a short hash
// prefix at most).
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// LevelTrace is below debug: per-frame detail that is too chatty even for
// --debug.
const LevelTrace slog.Level = slog.LevelDebug - 4

// Journal modes for Options.Journal.
const (
	JournalAuto = "auto"
	JournalOn   = "on"
	JournalOff  = "off"
)

// DefaultJournalSocket is where journald listens for native-protocol
// datagrams.
const DefaultJournalSocket = "/run/systemd/journal/socket"

// DefaultIdentifier is the SYSLOG_IDENTIFIER of tether's journal entries.
const DefaultIdentifier = "tether"

// Options configures New. The zero value logs text at info level to stderr,
// or to the journal when running under it.
type Options struct {
	// Level is error, warn, info, debug or trace; "" means info.
	Level string
	// LevelVar, if set, is set to Level and consulted on every record, so a
	// configuration reload can change the level of an existing logger.
	LevelVar *slog.LevelVar
	// Format is the stderr format: text or json; "" means text. The
	// journal always gets native fields.
	Format string
	// Writer receives text/JSON output and journal fallbacks; nil means
	// os.Stderr.
	Writer io.Writer
	// Journal is auto, on or off; "" means auto. Auto picks the journal
	// when its socket exists, Writer is stderr (nil or os.Stderr) and
	// stderr is either journald's stream (JOURNAL_STREAM matches it) or
	// not a terminal. On requires the socket to exist.
	Journal string
	// JournalSocket is the journald socket; "" means DefaultJournalSocket.
	JournalSocket string
	// Identifier is SYSLOG_IDENTIFIER; "" means DefaultIdentifier.
	Identifier string
}

// ParseLevel maps error, warn (or warning), info, debug and trace, in any
// case, to a slog level; "" is info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "error":
		return slog.LevelError, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "trace":
		return LevelTrace, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want error, warn, info, debug or trace)", s)
}

// New builds the logger Options describe.
func New(opts Options) (*slog.Logger, error) {
	level, err := ParseLevel(opts.Level)
	if err != nil {
		return nil, err
	}
	var leveler slog.Leveler = level
	if opts.LevelVar != nil {
		opts.LevelVar.Set(level)
		leveler = opts.LevelVar
	}
	w := opts.Writer
	if w == nil {
		w = os.Stderr
	}
	var stream slog.Handler
	hopts := &slog.HandlerOptions{Level: leveler, ReplaceAttr: levelNames}
	switch strings.ToLower(opts.Format) {
	case "text", "":
		stream = slog.NewTextHandler(w, hopts)
	case "json":
		stream = slog.NewJSONHandler(w, hopts)
	default:
		return nil, fmt.Errorf("unknown log format %q (want text or json)", opts.Format)
	}

	socket := opts.JournalSocket
	if socket == "" {
		socket = DefaultJournalSocket
	}
	useJournal := false
	switch strings.ToLower(opts.Journal) {
	case JournalAuto, "":
		useJournal = w == io.Writer(os.Stderr) && isSocket(socket) && stderrSuitsJournal()
	case JournalOn:
		if !isSocket(socket) {
			return nil, fmt.Errorf("journal logging requested but %s is not a socket (is systemd-journald running?)", socket)
		}
		useJournal = true
	case JournalOff:
	default:
		return nil, fmt.Errorf("unknown journal mode %q (want auto, on or off)", opts.Journal)
	}
	if !useJournal {
		return slog.New(stream), nil
	}

	ident := opts.Identifier
	if ident == "" {
		ident = DefaultIdentifier
	}
	h, err := newJournalHandler(socket, ident, leveler, stream)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// levelNames prints LevelTrace as TRACE rather than slog's "DEBUG-4".
func levelNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok && l <= LevelTrace {
			a.Value = slog.StringValue("TRACE")
		}
	}
	return a
}

func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}
