package link

import (
	"errors"
	"syscall"
	"time"

	"github.com/tether-agent/tether/internal/reconnect"
	"github.com/tether-agent/tether/internal/wsclient"
)

// Identity conflict. The real server keeps one connection per device and
// the newest wins: a second connect with the same identity closes the
// first, with no close frame (PROTOCOL.md 2.9.1). Two agents holding one
// identity (mender-connect left enabled beside tether, two tether
// instances) therefore knock each other off: each dial closes the other's
// connection, the other redials and closes this one.
//
// What counts as a conflict close: a connection the peer ended abruptly
// (EOF without a close frame, which gorilla reports as 1006, or a reset)
// within conflictWindow of opening. The other agent's redial, and so the
// close, comes well within that: under a second for tether's first redial
// jitter, a few seconds on a slow link. What does not count, so that a
// merely flaky network does not raise the alarm:
//   - dial failures: there was no connection to close;
//   - read and write timeouts: packet loss, a dead NAT mapping or a cut
//     cable end a link by silence, not by a FIN from the server;
//   - close frames: a server that says why (1011, 1008, 1001 on shutdown)
//     is not displacing us;
//   - links that lasted longer: a network that drops links at random
//     rarely drops one in its first seconds, let alone three in a row.
//
// An episode starts at conflictCount such closes among the last
// conflictOf connections, none older than conflictMemory. One or two
// abrupt early closes are a server restart or a load balancer failing
// over; three of five within minutes, each within seconds of opening and
// without a word from the server, are the fight. "Of five" rather than
// "in a row" because in the fight this agent sometimes keeps the link for
// a while before the other agent's redial comes.
//
// The episode ends when a connection stays up for conflictSettled. That
// is longer than conflictWindow (a link that ends in between neither
// counts nor clears, so the state does not flap) and shorter than the
// conflict backoff's floor, so the agent that holds the link while the
// other waits clears its own episode.
const (
	conflictWindow  = 10 * time.Second
	conflictCount   = 3
	conflictOf      = 5
	conflictMemory  = 10 * time.Minute
	conflictSettled = 20 * time.Second
	// conflictBackoffMax is the least cap of the backoff in an episode
	// (Reconnect.BackoffMax if that is longer); the wait is at least
	// half of it. See Link.conflictWait.
	conflictBackoffMax = time.Minute
)

// conflictAlert is what the status line says during an episode.
const conflictAlert = "identity conflict: another agent with this device's identity is probably connected (mender-connect still enabled?)"

// conflictPolicy holds the thresholds above; tests shrink them.
type conflictPolicy struct {
	window, settled, memory time.Duration
	count, of               int
}

func defaultConflictPolicy() conflictPolicy {
	return conflictPolicy{window: conflictWindow, settled: conflictSettled, memory: conflictMemory,
		count: conflictCount, of: conflictOf}
}

// connEnd is how one connection ended: when, and whether it was a
// conflict close.
type connEnd struct {
	at       time.Time
	conflict bool
}

// conflictTracker decides when an episode starts and ends. It is used by
// the link's Run goroutine only.
type conflictTracker struct {
	p      conflictPolicy
	recent []connEnd // the last p.of connections, oldest first
	active bool
	since  time.Time // start of the episode
	closes int       // conflict closes since the episode started
}

// isConflictClose reports whether a connection that was up for uptime and
// ended with err was closed the way the server closes a displaced one.
func (c *conflictTracker) isConflictClose(uptime time.Duration, err error) bool {
	return uptime < c.p.window && droppedByPeer(err)
}

// droppedByPeer: the peer ended the connection without a close frame.
func droppedByPeer(err error) bool {
	var ce *wsclient.CloseError
	if errors.As(err, &ce) {
		return ce.Code == wsclient.CloseAbnormalClosure
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ended records a connection that ended at now; conflict says whether it
// was a conflict close. It reports whether this starts an episode.
func (c *conflictTracker) ended(now time.Time, conflict bool) (started bool) {
	c.recent = append(c.recent, connEnd{at: now, conflict: conflict})
	if len(c.recent) > c.p.of {
		c.recent = c.recent[len(c.recent)-c.p.of:]
	}
	if c.active {
		if conflict {
			c.closes++
		}
		return false
	}
	n := 0
	for _, e := range c.recent {
		if e.conflict && now.Sub(e.at) <= c.p.memory {
			n++
		}
	}
	if n < c.p.count {
		return false
	}
	c.active, c.since, c.closes = true, now, n
	return true
}

// stable records that a connection has stayed up for p.settled. It ends
// the episode, if there is one, and reports it: how long it lasted and
// how many conflict closes it saw.
func (c *conflictTracker) stable(now time.Time) (ended bool, lasted time.Duration, closes int) {
	c.recent = c.recent[:0]
	if !c.active {
		return false, 0, 0
	}
	c.active = false
	return true, now.Sub(c.since), c.closes
}

// afterLink is the wait before redialling after a connection that was up
// for uptime ended with err, and feeds the identity conflict detector.
//
// With newest-wins, whichever agent dials last holds the link, so the pair
// can only settle if one of them stays away: the one knocked off right
// after connecting. In an episode it waits conflictWait. When it comes
// back it knocks the holder off; the holder's link was long-lived, so the
// holder redials at once (FirstJitter) and knocks this one off within a
// second or two, which then waits again. The holder keeps the link with a
// short drop every half minute to minute; this agent takes over within a
// minute once the other is gone.
func (l *Link) afterLink(uptime time.Duration, err error, bo *reconnect.Backoff) time.Duration {
	now := time.Now()
	if uptime >= l.conflict.p.settled {
		l.conflictOver(now)
	}
	conflict := l.conflict.isConflictClose(uptime, err)
	if conflict {
		l.opts.Observer.IdentityConflictClose()
	}
	started := l.conflict.ended(now, conflict)
	if !conflict || !l.conflict.active {
		return bo.AfterLink(uptime)
	}
	wait := l.conflictWait()
	if started {
		// Once per episode: the next line is the one saying it is over.
		l.log.Warn("the server keeps closing the link right after it opens: another agent with this device's identity "+
			"is probably connected (mender-connect still enabled?); backing off",
			"event", "identity_conflict", "closes", l.conflict.closes, "of_last", len(l.conflict.recent),
			"within", l.conflict.p.window, "retry_in", wait.Round(time.Millisecond))
		l.opts.Observer.IdentityConflict(true)
		l.opts.Alert(conflictAlert)
	}
	return wait
}

// conflictWait is the wait after a conflict close in an episode: at least
// half of conflictMax, plus full jitter that grows with each close up to
// the other half (the reconnect policy's Retry-After path: being pushed
// out is the server's way of saying "not now"). Full jitter from zero
// would make one wait in six shorter than conflictWindow: each such
// return knocks the holder off again, and may find it still redialling
// and swap the roles. The floor keeps the holder's stretches at least half
// a minute long; the jitter keeps two tethers from coming back in step.
func (l *Link) conflictWait() time.Duration {
	return l.conflictBo.AfterFailure(l.conflictMax / 2)
}

// conflictOver is called when a connection has stayed up for the settle
// time: any episode is over.
func (l *Link) conflictOver(now time.Time) {
	ended, lasted, closes := l.conflict.stable(now)
	if !ended {
		return
	}
	l.conflictBo.Reset()
	l.log.Info("the link has stayed up; the identity conflict is over",
		"event", "identity_conflict_over", "up_for", l.conflict.p.settled,
		"lasted", lasted.Round(time.Second), "closes", closes)
	l.opts.Observer.IdentityConflict(false)
	l.opts.Alert("")
}
