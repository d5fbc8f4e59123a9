package logging

// Attribute keys the daemon uses; in the journal they become TETHER_EVENT,
// TETHER_SESSION_ID, ... Using the constants keeps journal queries and
// dashboards stable.
const (
	KeyEvent     = "event"
	KeySessionID = "session_id"
	KeyUserID    = "user_id"
	KeyReason    = "reason"     // why a session closed (metrics.Reason*) or was rejected
	KeyDuration  = "duration"   // a time.Duration; the journal shows e.g. "1m30.5s"
	KeyProto     = "proto"      // session protocol, e.g. "shell"
	KeyLimit     = "limit"      // per_user or total
	KeyLinkState = "link_state" // connected, disconnected, ...
)

// Values of KeyEvent. Session open/close/reject records form the audit
// trail: who (user id), which session, when (the entry's time), how long
// and why it ended.
const (
	EventSessionOpen  = "session_open"
	EventSessionClose = "session_close"
	EventLimitReject  = "limit_reject"
	EventLinkUp       = "link_up"
	EventLinkDown     = "link_down"
	EventTokenChange  = "token_change"
)
