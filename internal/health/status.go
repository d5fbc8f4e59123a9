package health

import (
	"fmt"
	"strings"
)

// Summary is what the STATUS= line says, so that `systemctl status tether`
// answers "is it connected, and is anyone using it" in words.
type Summary struct {
	// Link is the link state in words: "connected", "connecting",
	// "disconnected", "waiting for credentials", ...
	Link string
	// Sessions is the number of open sessions, Users the number of distinct
	// users holding them.
	Sessions, Users int
	// MaxTotal is the configured session limit; 0 leaves it out.
	MaxTotal int
	// Note is a remark put before the alert, e.g. that sessions were
	// restored from the previous run; "" leaves it out.
	Note string
	// Alert is a standing warning put last, e.g. that another agent
	// holds this device's identity; "" leaves it out.
	Alert string
}

// String renders the summary, for example
// "link connected; 2 sessions for 1 user (limit 16)", with "; " and the
// alert after it if there is one.
func (s Summary) String() string {
	var b strings.Builder
	link := s.Link
	if link == "" {
		link = "unknown"
	}
	b.WriteString("link ")
	b.WriteString(link)
	b.WriteString("; ")
	switch s.Sessions {
	case 0:
		b.WriteString("no sessions")
	default:
		fmt.Fprintf(&b, "%s for %s", plural(s.Sessions, "session"), plural(s.Users, "user"))
	}
	if s.MaxTotal > 0 {
		fmt.Fprintf(&b, " (limit %d)", s.MaxTotal)
	}
	if s.Note != "" {
		b.WriteString("; ")
		b.WriteString(s.Note)
	}
	if s.Alert != "" {
		b.WriteString("; ")
		b.WriteString(s.Alert)
	}
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
