package session

import (
	"fmt"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/wire"
)

// maxIDLen bounds the identifiers a server puts in a header: the session
// id, the user id, the message type and id. Real ones are 36-character
// UUIDs or short words; without a bound, 1,024 control sessions with 1 MB
// ids would hold a gigabyte, and every log line or error reply naming one
// would carry it.
const maxIDLen = 128

// peerLogs rate-limits the log lines whose content or rate the server
// controls, each kind on its own so one flood does not hide another.
type peerLogs struct {
	oversized logging.RateLimit // messages refused for an oversized identifier
	reject    logging.RateLimit // limit_reject
	ctrlError logging.RateLimit // control errors from the server
}

// oversizedField names the first header identifier longer than maxIDLen
// and its length; "" when there is none.
func oversizedField(h *wire.Header) (field string, n int) {
	for _, f := range []struct {
		name string
		val  string
	}{
		{"session id", h.SessionID},
		{"message type", h.MsgType},
		{"user id", h.StringProp(wire.PropUserID)},
		{"message id", h.StringProp(wire.PropMsgID)},
	} {
		if len(f.val) > maxIDLen {
			return f.name, len(f.val)
		}
	}
	return "", 0
}

// refuseOversized answers and drops a message with an oversized
// identifier before anything keeps it. The control error goes out without
// a session id: echoing the id would send the server its megabyte back,
// and no real peer owns such a session.
func (r *Router) refuseOversized(m *wire.ProtoMsg) bool {
	h := &m.Header
	field, n := oversizedField(h)
	if field == "" {
		return false
	}
	if r.plog.oversized.Allow(r.now()) {
		r.log.Warn("message refused: "+field+" too long", "proto", wire.ProtoName(h.Proto),
			"type", logging.Clip(h.MsgType), logging.KeySessionID, logging.Clip(h.SessionID),
			logging.KeyUserID, logging.Clip(h.StringProp(wire.PropUserID)), "length", n,
			"suppressed", r.plog.oversized.TakeSuppressed())
	}
	about := wire.Header{Proto: h.Proto}
	if len(h.MsgType) <= maxIDLen {
		about.MsgType = h.MsgType
	}
	r.sendControlError("", fmt.Sprintf("%s too long: %d bytes, at most %d", field, n, maxIDLen), false, &about)
	return true
}
