// Package session is the router: it routes the device's inbound messages
// by protocol and session id to the protocols (internal/proto/...), keeps
// the table of sessions that count against the limits (the terminal's),
// admits them, expires them and stops them, and answers the control
// protocol. Each protocol owns its sessions' work; nothing here blocks the
// link's read loop.
package session

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// Recorder is told what happens, for metrics.
type Recorder interface {
	LimitRejected(limit string)
	// SessionDetached counts a session whose peer is deemed gone, by why
	// (proto.Detach*).
	SessionDetached(why string)
	// SessionReattached counts a detached session given a peer again:
	// "resumed" (its own peer answered) or "new_terminal".
	SessionReattached(how string)
	// DetachedSessions is how many sessions are detached now.
	DetachedSessions(n int)
}

// Beater is a health loop handle: the janitor answers its Probe.
type Beater interface {
	Beat()
	Probe() <-chan struct{}
}

// Options configure the router.
type Options struct {
	Log *slog.Logger

	// Terminal serves proto 1 (nil: disabled); its sessions count
	// against the limits below.
	Terminal proto.Admitted
	// Protocols are the other protocols compiled in and enabled, served
	// in router sessions by sid.
	Protocols       []proto.Protocol
	MaxPerUser      int
	MaxTotal        int
	EvictOldest     bool
	IdleTimeout     time.Duration // 0 = off
	AbsoluteTimeout time.Duration // 0 = off
	StopGrace       time.Duration
	// DetachedTimeout is how long a session whose peer is gone is kept
	// for its user to reattach (0: such a session ends once found).
	DetachedTimeout time.Duration
	// ProbeGrace is how long a probed session's peer has to answer.
	ProbeGrace time.Duration
	// PingInterval is the terminal's health ping interval: the janitor,
	// which runs the health checks, ticks at least four times per interval.
	PingInterval time.Duration

	// QueueLimit bounds each session's outbound bytes (back-pressure);
	// 0 = OutputBudget shared by MaxTotal sessions, at most 256 KiB each.
	QueueLimit int
	// Now is the clock (nil: time.Now); durations are measured on its
	// monotonic reading, and tests drive time with their own.
	Now func() time.Time

	Recorder Recorder
	Janitor  Beater
}

// Router is the session table and message dispatcher.
type Router struct {
	opts Options
	log  *slog.Logger
	mux  *mux.Mux
	ctl  *mux.Queue // replies that belong to no live admitted session
	now  func() time.Time
	base time.Time // the clock at New: r.mono() counts from it

	protos map[uint16]proto.Protocol

	mu sync.Mutex
	// anon holds the protocol sessions of messages without a sid (the
	// server sends Mender client commands so). Like the sid's sessions
	// they end with the link: what the server asked on a link that is
	// gone has nobody to answer; a fresh one serves the next link.
	anon   *ctrlSession
	shells map[string]*leased // the admitted sessions: the shells
	ctrl   map[string]*ctrlSession
	closed bool
	// pending holds the sids whose "new" waits for a probe of the user's
	// sessions.
	pending map[string]*pendingAdmit

	wg sync.WaitGroup // every admitted session's goroutines
	// bg owns the router's own goroutines that close protocol sessions
	// off the read loop; Shutdown waits for them before it closes the
	// protocols.
	bg proto.Group

	malformedLog logging.RateLimit
	plog         peerLogs
	done         chan struct{} // closed by Shutdown
	doneOnce     sync.Once
	// kick wakes the janitor to recompute when it is next due: a session
	// opened, a ping left (its pong deadline starts).
	kick chan struct{}
}

// OutputBudget is what all shell sessions' outbound queues may hold
// together: a 64 MB device keeps 4 MiB for output the link cannot take
// yet (16 sessions × 256 KiB, or 1,024 × 16 KiB; a queue always takes one
// frame of up to ReadBuffer when empty).
const OutputBudget = 4 << 20

// DefaultProbeGrace is how long a probed peer has to answer: a live
// browser or mender-cli answers a ping within a round trip.
const DefaultProbeGrace = 1500 * time.Millisecond

// queueLimit is the per-session share of OutputBudget.
func queueLimit(maxTotal int) int {
	return max(16<<10, min(256<<10, OutputBudget/max(1, maxTotal)))
}

// New builds a router that sends through mux.
func New(opts Options, m *mux.Mux) *Router {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Recorder == nil {
		opts.Recorder = nopRecorder{}
	}
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = queueLimit(opts.MaxTotal)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Router{
		opts:   opts,
		log:    opts.Log,
		mux:    m,
		ctl:    m.NewQueue(256 << 10),
		now:    opts.Now,
		base:   opts.Now(),
		done:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
		protos: make(map[uint16]proto.Protocol),
		anon:   &ctrlSession{},
		shells: make(map[string]*leased),
		ctrl:   make(map[string]*ctrlSession),
	}
	r.pending = make(map[string]*pendingAdmit)
	if r.opts.ProbeGrace <= 0 {
		r.opts.ProbeGrace = DefaultProbeGrace
	}
	for _, p := range opts.Protocols {
		r.protos[p.Number()] = p
	}
	return r
}

// mono is the router clock's monotonic time since New.
func (r *Router) mono() time.Duration { return r.now().Sub(r.base) }

// Counts reports the live shell sessions and distinct users.
func (r *Router) Counts() (shells, users int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[string]bool)
	for _, s := range r.shells {
		seen[s.userID] = true
	}
	return len(r.shells), len(seen)
}

// SessionInfo describes a live shell session for a status report.
type SessionInfo struct {
	SessionID string
	UserID    string
	Started   time.Time
	LastInput time.Time
	Detached  bool // its peer is gone; it waits for its user to reattach
}

// Sessions lists the live shell sessions, oldest first.
func (r *Router) Sessions() []SessionInfo {
	r.mu.Lock()
	out := make([]SessionInfo, 0, len(r.shells))
	for _, s := range r.shells {
		out = append(out, SessionInfo{SessionID: s.sid, UserID: s.userID, Started: s.created,
			LastInput: r.base.Add(time.Duration(s.lastInput.Load())), Detached: s.detached})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// Protocols lists the enabled protocols for the control "accept", in
// upstream's order (clients only test membership).
func (r *Router) Protocols() []uint16 {
	out := []uint16{}
	if r.opts.Terminal != nil {
		out = append(out, r.opts.Terminal.Number())
	}
	for n := range r.protos {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// HandleMessage dispatches one inbound message. Called by the link's read
// loop: it never blocks.
func (r *Router) HandleMessage(m *wire.ProtoMsg) {
	if r.refuseOversized(m) {
		return
	}
	switch m.Header.Proto {
	case wire.ProtoShell:
		if r.opts.Terminal == nil {
			r.unknownShellMessage(m)
			return
		}
		r.handleAdmitted(r.opts.Terminal, m)
	case wire.ProtoControl:
		r.handleControl(m)
	default:
		c := r.touchCtrl(m.Header.SessionID)
		p := r.protos[m.Header.Proto]
		if p == nil {
			r.sendControlError(m.Header.SessionID, fmt.Sprintf("no handler registered for protocol: 0x%04X", m.Header.Proto), false, &m.Header)
			return
		}
		if c == nil {
			r.mu.Lock()
			c = r.anon
			r.mu.Unlock()
		}
		r.handleProto(c, p, m)
	}
}

// HandleMalformed answers a frame that could not be decoded: a control
// error to its session if a session id could be read, and a log line
// (rate-limited, so a hostile peer cannot flood the journal).
func (r *Router) HandleMalformed(de *wire.DecodeError) {
	if r.malformedLog.Allow(r.now()) {
		r.log.Warn("malformed frame from server", "kind", string(de.Kind), "error", de.Err,
			"session_id", logging.Clip(de.Partial.SessionID), "suppressed", r.malformedLog.TakeSuppressed())
	}
	if field, _ := oversizedField(&de.Partial); field != "" {
		return // no reply that would echo it
	}
	if de.Partial.SessionID != "" {
		h := de.Partial
		r.sendControlError(h.SessionID, "malformed message: "+de.Err.Error(), false, &h)
	}
}

// LinkDown keeps every session, detached: the shells live on, as
// upstream, for their users to reattach or a server that kept their
// connections to answer.
func (r *Router) LinkDown() {
	r.detachAll()
	r.mu.Lock()
	// Router (control) sessions cannot survive a reconnect: the server
	// gives every connection new ids. Nor can the sid-less ones: nothing
	// on the next link refers to them.
	ended := r.ctrl
	r.ctrl = make(map[string]*ctrlSession)
	anon := r.anon
	if !r.closed {
		r.anon = &ctrlSession{}
	}
	r.mu.Unlock()
	for _, c := range ended {
		r.closeProtos(c)
	}
	r.closeProtos(anon)
}

// TokenCleared stops every shell: the device lost its authorization.
func (r *Router) TokenCleared() {
	r.stopAll(proto.ReasonTokenCleared, "")
}

// Shutdown tells every peer its session stops and tears all shells down
// with grace, closes every protocol (proto.Protocol.Close), then waits
// for the shells and the protocols' goroutines (or for ctx).
func (r *Router) Shutdown(ctx context.Context, grace time.Duration) {
	r.mu.Lock()
	r.closed = true
	r.doneOnce.Do(func() { close(r.done) })
	ended := r.ctrl
	r.ctrl = make(map[string]*ctrlSession)
	anon := r.anon
	r.mu.Unlock()
	for _, c := range ended {
		r.closeProtos(c)
	}
	r.closeProtos(anon)
	r.stopAllGrace(proto.ReasonShutdown, "device agent shutting down", grace)
	done := make(chan struct{})
	go func() {
		// The sessions are closed; each protocol now ends what it
		// started and waits for it, as the shells are waited for.
		r.bg.Close()
		for _, p := range r.opts.Protocols {
			p.Close()
		}
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("shutdown: sessions still tearing down", "error", ctx.Err())
	}
}

// Wait waits for every session goroutine to end.
func (r *Router) Wait() { r.wg.Wait() }

func (r *Router) stopAll(reason, notice string) {
	r.stopAllGrace(reason, notice, r.opts.StopGrace)
}

func (r *Router) stopAllGrace(reason, notice string, grace time.Duration) {
	r.mu.Lock()
	all := make([]*leased, 0, len(r.shells))
	for _, s := range r.shells {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.s.Stop(reason, notice, grace)
	}
}

// Run is the janitor: expiry, shell health pings, pong timeouts and
// control session supervision. It ends with ctx. It sleeps until the next
// of those is due (none while no session is open), and wakes early only
// when that may have moved closer: a session opened, a ping left, the link
// came up. The health monitor's probe is answered without a sweep.
func (r *Router) Run(ctx context.Context) {
	var probe <-chan struct{}
	if r.opts.Janitor != nil {
		probe = r.opts.Janitor.Probe()
	}
	t := time.NewTimer(time.Hour)
	stopTimer(t)
	defer t.Stop()
	for {
		stopTimer(t)
		if next := r.sweep(); next > 0 {
			t.Reset(next)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-probe:
				r.opts.Janitor.Beat()
				continue
			case <-t.C:
			case <-r.kick:
			case <-r.mux.Ups():
			}
			break wait
		}
	}
}

// stopTimer stops t and empties its channel, so that Reset starts afresh
// (go.mod's Go 1.22 keeps the old timer channel semantics).
func stopTimer(t *time.Timer) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
}

// wake tells the janitor that something may be due sooner; it never
// blocks.
func (r *Router) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// sooner returns the earlier of two delays, where 0 means none.
func sooner(a, b time.Duration) time.Duration { return proto.Sooner(a, b) }

// sweep supervises every session once and returns how long until the
// next thing is due by the router clock; 0 means nothing is.
func (r *Router) sweep() time.Duration {
	r.mu.Lock()
	all := make([]*leased, 0, len(r.shells))
	for _, s := range r.shells {
		all = append(all, s)
	}
	r.mu.Unlock()
	now := r.mono()
	next, pinged := superviseAll(all, now, 0)
	if early := r.opts.PingInterval / 4; pinged && early > 0 {
		// Pings going out anyway take along those due soon, so that
		// sessions opened at different times fall into step and share
		// the janitor's wakeups; alone, a session pings on time.
		next, _ = superviseAll(all, now, early)
	}
	next = sooner(next, r.probeSuspects(now))
	return sooner(next, r.superviseCtrl(r.now()))
}

func superviseAll(all []*leased, now, early time.Duration) (next time.Duration, pinged bool) {
	for _, s := range all {
		d, p := s.supervise(now, early)
		next, pinged = sooner(next, d), pinged || p
	}
	return next, pinged
}

// send queues a frame that belongs to no shell session (or whose session
// queue is full). It never blocks; a frame that does not fit is dropped
// and logged.
func (r *Router) send(m *wire.ProtoMsg) {
	b, err := wire.Marshal(m)
	if err != nil {
		r.log.Error("encode reply", "error", err)
		return
	}
	if !r.ctl.TryPut(b) {
		r.log.Debug("reply dropped: link down or reply queue full", "proto", wire.ProtoName(m.Header.Proto), "type", m.Header.MsgType)
	}
}

func (r *Router) sendControlError(sid, text string, closeSession bool, about *wire.Header) {
	body := wire.ErrorBody{Error: text, Close: closeSession}
	if about != nil {
		body.MessageProto = about.Proto
		body.MessageType = about.MsgType
		body.MessageID = about.StringProp(wire.PropMsgID)
	}
	b, err := wire.EncodeBody(body)
	if err != nil {
		r.log.Error("encode control error", "error", err)
		return
	}
	r.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeError, SessionID: sid}, Body: b})
}

type nopRecorder struct{}

func (nopRecorder) LimitRejected(string)     {}
func (nopRecorder) SessionDetached(string)   {}
func (nopRecorder) SessionReattached(string) {}
func (nopRecorder) DetachedSessions(int)     {}
