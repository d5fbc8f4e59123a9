package session

import (
	"sort"
	"time"
)

// slot is what admission needs to know of a live session.
type slot struct {
	sid, user  string
	lastInput  time.Duration // monotonic, router clock
	detached   bool          // its peer is deemed gone
	detachedAt time.Duration // monotonic, router clock, when detached
}

// admission is the decision on a new session.
type admission struct {
	refuse      string // "" admitted; else the limit: "per_user" or "total"
	reattach    string // sid of the user's detached session handed over instead
	evict       string // sid of the session that gives up its slot
	evictNotice string
	// evictsLive says evict names a session whose peer is not known to be
	// gone: a probe may find it detached and save it.
	evictsLive bool
}

// admit decides on a new session of user against the live sessions. A
// user with a detached session gets it back, most recently detached first
// (keep says detached sessions are kept for that; without it they are only
// replaced, as orphans were). A user at the per-user limit otherwise
// replaces a detached session, else its most idle one if EvictOldest is
// set.
func admit(table []slot, user string, maxPerUser, maxTotal int, evictOldest, keep bool) admission {
	var mine, gone []slot
	for _, s := range table {
		if s.user == user {
			mine = append(mine, s)
			if s.detached {
				gone = append(gone, s)
			}
		}
	}
	sort.SliceStable(gone, func(i, j int) bool { return gone[i].detachedAt > gone[j].detachedAt })
	if keep && len(gone) > 0 {
		return admission{reattach: gone[0].sid}
	}
	var a admission
	if len(mine) >= maxPerUser {
		if len(gone) > 0 {
			// The most long gone first: the latest may still be
			// reached by a server that kept its connection.
			s := gone[len(gone)-1]
			a.evict, a.evictNotice = s.sid, "session replaced: its connection was lost"
		} else if evictOldest && len(mine) > 0 {
			sort.SliceStable(mine, func(i, j int) bool { return mine[i].lastInput < mine[j].lastInput })
			a.evict, a.evictNotice, a.evictsLive = mine[0].sid, "session replaced by a newer session of the same user", true
		} else {
			return admission{refuse: "per_user"}
		}
	}
	n := len(table)
	if a.evict != "" {
		n--
	}
	if n >= maxTotal {
		return admission{refuse: "total"}
	}
	return a
}
