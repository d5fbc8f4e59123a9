package session

import (
	"sort"
	"time"
)

// slot is what admission needs to know of a live session.
type slot struct {
	sid, user string
	lastInput time.Duration // monotonic, router clock
	orphan    bool          // its peer has not been heard from since a link drop
}

// admission is the decision on a new session.
type admission struct {
	refuse      string // "" admitted; else the limit: "per_user" or "total"
	evict       string // sid of the session that gives up its slot
	evictNotice string
}

// admit decides on a new session of user against the live sessions. A
// user at the per-user limit first replaces one of its sessions orphaned by
// a lost connection (unlike upstream, which locked the user out until the
// health check gave up), else its most idle one if EvictOldest is set.
func admit(table []slot, user string, maxPerUser, maxTotal int, evictOldest bool) admission {
	var mine []slot
	for _, s := range table {
		if s.user == user {
			mine = append(mine, s)
		}
	}
	var a admission
	if len(mine) >= maxPerUser {
		sort.SliceStable(mine, func(i, j int) bool { return mine[i].lastInput < mine[j].lastInput })
		for _, s := range mine {
			if s.orphan {
				a.evict, a.evictNotice = s.sid, "session replaced: its connection was lost"
				break
			}
		}
		if a.evict == "" && evictOldest && len(mine) > 0 {
			a.evict, a.evictNotice = mine[0].sid, "session replaced by a newer session of the same user"
		}
		if a.evict == "" {
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
