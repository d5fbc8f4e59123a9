// Package filetransfer is proto 2 (docs/protocol.md §5): stat, download and
// upload of files in a router session, wire-exact with upstream, with
// limits that hold (§5.4) and every file operation done with the
// configured account's rights. See docs/file-transfer.md.
package filetransfer

import (
	"context"
	"errors"
	"fmt"
	"github.com/tether-agent/tether/internal/identity"
	"io"
	"log/slog"
	"os/user"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tether-agent/tether/internal/fdbudget"
	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// Upstream's texts (docs/protocol.md §5.1); the server and people match them.
const (
	msgInProgress   = "another file transfer is in progress"
	msgNoTransfer   = "no file transfer in progress"
	msgUnsupported  = "session: filetransfer message type '%s' not supported"
	msgAccessDenied = "access denied: "
)

// Defaults.
const (
	// DefaultAckTimeout ends a transfer whose peer has been silent that
	// long (the server's own wait per message).
	DefaultAckTimeout = 60 * time.Second
	// DefaultQueue bounds the inbound messages a session holds: the
	// server keeps at most 20 chunks unacknowledged, so a peer that
	// follows the protocol never fills it.
	DefaultQueue = 128
	// DefaultQueueBytes bounds the bytes of the inbound messages a
	// session holds (queued and in hand): 20 unacknowledged chunks are
	// about 85 KiB.
	DefaultQueueBytes = 512 << 10
	// DefaultTotalQueueBytes bounds the same over all sessions: 1,024
	// sessions of 512 KiB would otherwise be half a gigabyte.
	DefaultTotalQueueBytes = 8 << 20
	// maxPath is the kernel's PATH_MAX: a longer path cannot name a file,
	// and is not echoed back in an error.
	maxPath = 4096
)

// Descriptors a request holds while it runs: a download its file; an
// upload its directory, its temporary file and, to sync the directory at
// the end, the directory once more; a stat its O_PATH handle.
const (
	fdsDownload = 1
	fdsUpload   = 3
	fdsStat     = 1
)

// Refusals of this implementation's own limits.
const (
	msgQueueFull = "too many messages from the peer: the device's file-transfer queue is full"
	msgNoFDs     = "file transfer refused: no file descriptors left for it (the rest is kept for shells and the link)"
	msgTooMany   = "too many file transfers in progress on the device (limit %d)"
)

// Options configure the protocol.
type Options struct {
	Log *slog.Logger
	// Identity is the account every file operation runs as; nil means
	// the daemon's own (only sensible when the daemon is not root).
	Identity *identity.Identity
	// Limits is the Limits tree of the configuration; its FileTransfer
	// part applies only when Enabled.
	Limits Limits
	// AckTimeout ends a transfer whose peer stays silent (default 60 s).
	AckTimeout time.Duration
	// QueueLength bounds each session's inbound queue (default 128).
	QueueLength int
	// StateDir (the runtime directory) holds the journal of uploads'
	// temporary files; New removes those a killed daemon left. "" = none.
	StateDir string
	// QueueBytes bounds the bytes of each session's inbound messages,
	// TotalQueueBytes their sum over every session (defaults
	// DefaultQueueBytes, DefaultTotalQueueBytes). A message beyond either
	// is dropped and the peer told (a running transfer is aborted).
	QueueBytes, TotalQueueBytes int64
	// MaxTransfers bounds the transfers running at once (default
	// DefaultMaxTransfers).
	MaxTransfers int
	// FDs is the daemon's descriptor budget for remote users' work,
	// shared with port forwarding; nil is unlimited.
	FDs *fdbudget.Budget
}

// Protocol serves proto 2. Its byte-rate limiters are device-global, as
// upstream's counters are.
type Protocol struct {
	opts   Options
	log    *slog.Logger
	res    resolver
	umask  uint32
	tx, rx *rate.Limiter
	// g owns the sessions and every goroutine: each session's, and a
	// paced collection.
	g proto.Group

	journal *journal
	queued  atomic.Int64 // bytes of inbound messages held, all sessions
	running atomic.Int64 // transfers running
	// moved counts the bytes transfers have moved; collecting is set
	// while a collection paced by it runs, or while its holder reads
	// allocs. allocs and collected belong to whoever set collecting.
	moved      atomic.Int64
	collecting atomic.Bool
	allocs     [1]metrics.Sample
	collected  uint64 // the heap's allocations at the last paced collection

	peerLog   logging.RateLimit // error texts from the peer
	refuseLog logging.RateLimit // messages dropped, transfers refused
}

// New builds the protocol; a malformed Umask is an error.
func New(o Options) (*Protocol, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.QueueLength <= 0 {
		o.QueueLength = DefaultQueue
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.TotalQueueBytes <= 0 {
		o.TotalQueueBytes = DefaultTotalQueueBytes
	}
	if o.MaxTransfers <= 0 {
		o.MaxTransfers = DefaultMaxTransfers
	}
	// Paths, error texts and the errors that quote them come from the
	// peer: every line this package logs has its strings clipped.
	log := slog.New(clipHandler{o.Log.Handler()})
	p := &Protocol{opts: o, log: log.With("proto", "filetransfer")}
	l := o.Limits.FileTransfer
	if o.Limits.Enabled {
		p.res = newResolver(l.Chroot, l.FollowSymLinks)
		if l.Umask != "" {
			u, err := strconv.ParseUint(l.Umask, 8, 32)
			if err != nil || u > 0o777 {
				return nil, errors.New("Limits.FileTransfer.Umask: want octal digits, e.g. 022")
			}
			p.umask = uint32(u)
		}
		p.tx = perMinute(l.Counters.MaxBytesTxPerMinute)
		p.rx = perMinute(l.Counters.MaxBytesRxPerMinute)
	} else {
		p.res = newResolver("", true)
	}
	p.journal = openJournal(o.StateDir, p.log)
	p.sweep()
	return p, nil
}

// perMinute is a token bucket that holds a minute's worth of bytes and
// refills at that rate, so that no minute carries more than the limit on
// top of what was saved up; nil means unlimited.
func perMinute(n uint64) *rate.Limiter {
	if n == 0 {
		return nil
	}
	burst := int(min(n, 1<<40))
	return rate.NewLimiter(rate.Limit(float64(n)/60), max(burst, wire.FileChunkSize))
}

// Number implements proto.Protocol.
func (p *Protocol) Number() uint16 { return wire.ProtoFileTransfer }

// Wait waits until every goroutine has ended, closing nothing (tests,
// once their sessions are closed).
func (p *Protocol) Wait() { p.g.Wait() }

// Close ends every session (a running transfer aborts and removes its
// temporary file) and waits until all the goroutines have ended
// (proto.Protocol).
func (p *Protocol) Close() { p.g.Close() }

// Open implements proto.Protocol.
func (p *Protocol) Open(sid string, out proto.Sender) proto.Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		p:      p,
		sid:    sid,
		out:    out,
		log:    p.log.With("session_id", sid),
		in:     make(chan item, p.opts.QueueLength),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	run := func() {
		defer close(s.done)
		defer s.drain()
		s.run()
	}
	if !p.g.Track(s) || !p.g.Go(run) {
		// The protocol is closed: the session takes nothing.
		s.cancel()
		close(s.done)
	}
	return s
}

// item is an inbound message and the bytes it counts against the queues'
// budgets.
type item struct {
	m    *wire.ProtoMsg
	size int64
}

// reserve counts n bytes against the device-wide budget if they fit.
func (p *Protocol) reserve(n int64) bool {
	for {
		q := p.queued.Load()
		if q+n > p.opts.TotalQueueBytes {
			return false
		}
		if p.queued.CompareAndSwap(q, q+n) {
			return true
		}
	}
}

// gcEvery is how many bytes the heap may allocate, while transfers run,
// between two collections: garbage is collected before it can grow the
// heap to the runtime's goal, which the kernel would then see as resident
// memory long after the transfer. Transfers make almost no garbage (frames,
// chunk bodies, messages and acks are reused; what is left is about 12 kB
// per MiB downloaded, the websocket library's writer per frame), so this
// is a collection every 80 MiB or so, and none in a transfer of a few tens
// of MiB: a collection is not free, and a fresh daemon's first one maps a
// megabyte of the runtime's bookkeeping.
const gcEvery = 1 << 20

// gcCheckEvery is how many transferred bytes pass between two looks at
// the heap's allocations.
const gcCheckEvery = 64 << 10

// paced counts n transferred bytes and, each gcCheckEvery, starts a
// collection, in the background and one at a time, once the heap has
// allocated gcEvery more bytes since the last one, or since the first
// look (what the daemon allocated before any transfer is not the
// transfers' garbage: counting it forced a collection at the start of
// the first transfer). A small heap takes well under a millisecond to
// collect.
func (p *Protocol) paced(n int) {
	after := p.moved.Add(int64(n))
	if (after-int64(n))/gcCheckEvery == after/gcCheckEvery || !p.collecting.CompareAndSwap(false, true) {
		return
	}
	p.allocs[0].Name = "/gc/heap/allocs:bytes"
	metrics.Read(p.allocs[:])
	a := p.allocs[0].Value.Uint64()
	if p.collected == 0 {
		p.collected = a
	}
	if a-p.collected < gcEvery {
		p.collecting.Store(false)
		return
	}
	p.collected = a
	if !p.g.Go(func() {
		defer p.collecting.Store(false)
		runtime.GC()
	}) {
		p.collecting.Store(false)
	}
}

// begin takes a transfer's place and descriptors; "" means it may run,
// otherwise the refusal for the peer. end gives them back.
func (p *Protocol) begin(fds int) string {
	if p.running.Add(1) > int64(p.opts.MaxTransfers) {
		p.running.Add(-1)
		return fmt.Sprintf(msgTooMany, p.opts.MaxTransfers)
	}
	if !p.opts.FDs.Acquire(fds) {
		p.running.Add(-1)
		return msgNoFDs
	}
	return ""
}

func (p *Protocol) end(fds int) {
	p.opts.FDs.Release(fds)
	p.running.Add(-1)
}

// session is the protocol's state in one router session: one goroutine
// that owns at most one transfer.
type session struct {
	p   *Protocol
	sid string
	out proto.Sender
	log *slog.Logger

	in       chan item
	overflow atomic.Bool
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}

	// bytes counts the session's inbound messages, queued and in hand,
	// against Options.QueueBytes; Protocol.queued has the same in it.
	bytes atomic.Int64
	// dropped is the header of the first message dropped since the
	// goroutine last looked, for the error reply.
	dropMu  sync.Mutex
	dropped *wire.Header

	// Owned by run's goroutine.
	pending  []*wire.ProtoMsg // taken from in (by ready, and counted in cur) but not handled yet
	cur      int64            // bytes of the message in hand, counted until the next is taken
	finished int64            // total of the last completed download, for its late acks
	timer    *time.Timer      // next's, stopped and drained between waits
}

// Handle implements proto.Session; it never blocks. A message that does
// not fit the session's queue or the device's budget for all of them is
// dropped: a running transfer is aborted, otherwise the peer gets an
// error for it.
func (s *session) Handle(m *wire.ProtoMsg) {
	if s.ctx.Err() != nil {
		return
	}
	size := int64(m.MemSize())
	if s.bytes.Add(size) <= s.p.opts.QueueBytes && s.p.reserve(size) {
		select {
		case s.in <- item{m: m, size: size}:
			return
		default:
			s.p.queued.Add(-size)
		}
	}
	s.bytes.Add(-size)
	s.drop(m)
}

// drop remembers the first message dropped and logs the overflow once
// per episode, rate-limited over all sessions.
func (s *session) drop(m *wire.ProtoMsg) {
	s.dropMu.Lock()
	if s.dropped == nil {
		h := m.Header.Clone()
		s.dropped = &h
	}
	s.dropMu.Unlock()
	if !s.overflow.Swap(true) && s.p.refuseLog.Allow(time.Now()) {
		s.log.Warn("file transfer: too many messages from the peer; dropping them", "type", m.Header.MsgType,
			"queued", len(s.in), "queued_bytes", s.bytes.Load(), "device_queued_bytes", s.p.queued.Load(),
			"suppressed", s.p.refuseLog.TakeSuppressed())
	}
}

// takeDropped returns and forgets the first dropped message's header.
func (s *session) takeDropped() *wire.Header {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	h := s.dropped
	s.dropped = nil
	return h
}

// take makes it the message in hand: the previous one's bytes are given
// back to the budgets.
func (s *session) take(it item) *wire.ProtoMsg {
	s.release(s.cur)
	s.cur = it.size
	s.p.paced(len(it.m.Body))
	return it.m
}

// handled gives back the bytes of the message in hand once it is handled,
// unless it waits in pending (taken by ready, handed out later by next).
func (s *session) handled() {
	if len(s.pending) == 0 {
		s.release(s.cur)
		s.cur = 0
	}
}

func (s *session) release(n int64) {
	if n != 0 {
		s.bytes.Add(-n)
		s.p.queued.Add(-n)
	}
}

// drain gives back what the session still counts when its goroutine
// ends; nothing is queued after Close.
func (s *session) drain() {
	s.release(s.cur)
	s.cur = 0
	s.pending = nil
	for {
		select {
		case it := <-s.in:
			s.release(it.size)
		default:
			return
		}
	}
}

// Close implements proto.Session: the goroutine stops at once, and a
// running transfer removes its temporary file on its way out.
func (s *session) Close() {
	s.p.g.Untrack(s)
	s.cancel()
}

// next returns the next message, or nil when the session ends or the
// peer has been silent for the ack timeout (timedOut).
func (s *session) next(timeout time.Duration) (m *wire.ProtoMsg, timedOut bool) {
	if len(s.pending) > 0 {
		// The message was taken (and counted as in hand) by ready.
		m = s.pending[0]
		s.pending = s.pending[1:]
		return m, false
	}
	// Asking for the next message, the caller is done with the last.
	s.handled()
	var tc <-chan time.Time
	if timeout > 0 {
		// One timer per session, re-armed per wait: a timer per chunk
		// or ack was a good part of a transfer's garbage.
		if s.timer == nil {
			s.timer = time.NewTimer(timeout)
		} else {
			s.timer.Reset(timeout)
		}
		tc = s.timer.C
	}
	select {
	case it := <-s.in:
		s.disarm()
		return s.take(it), false
	case <-s.ctx.Done():
		s.disarm()
		return nil, false
	case <-tc:
		return nil, true // fired and drained
	}
}

// disarm stops the wait timer and drains a tick that raced the stop, so
// the next Reset starts afresh (go.mod's Go 1.22 keeps the old timer
// channel semantics).
func (s *session) disarm() {
	if s.timer != nil && !s.timer.Stop() {
		select {
		case <-s.timer.C:
		default:
		}
	}
}

// ready returns a message already queued, without waiting.
func (s *session) ready() *wire.ProtoMsg {
	select {
	case it := <-s.in:
		// It stays counted while in hand or pending (a pending message
		// is handed out by next without being counted again).
		return s.take(it)
	default:
		return nil
	}
}

func (s *session) run() {
	s.finished = -1
	for {
		m, _ := s.next(0)
		if m == nil {
			return
		}
		if s.overflow.Swap(false) {
			s.refuseDropped()
		}
		s.dispatch(m)
		s.handled()
	}
}

// refuseDropped answers the first message dropped since the last time:
// one error per flood, not one per message, since the reply itself
// would need the room the flood took.
func (s *session) refuseDropped() {
	h := s.takeDropped()
	if h == nil {
		return
	}
	s.replyError(&wire.ProtoMsg{Header: *h}, msgQueueFull)
}

// refused logs a refusal of the device's own limits, rate-limited.
func (s *session) refused(m *wire.ProtoMsg, text string) {
	if s.p.refuseLog.Allow(time.Now()) {
		s.log.Warn("file transfer: request refused", "type", m.Header.MsgType, "reason", text,
			"suppressed", s.p.refuseLog.TakeSuppressed())
	}
	s.replyError(m, text)
}

// transfer runs a download or upload within the device's limits.
func (s *session) transfer(m *wire.ProtoMsg, fds int, run func(*wire.ProtoMsg)) {
	if text := s.p.begin(fds); text != "" {
		s.refused(m, text)
		return
	}
	defer s.p.end(fds)
	run(m)
}

// peerAborted logs an error message from the peer: its text is the
// peer's, so the line is clipped and rate-limited.
func (s *session) peerAborted(what, path string, m *wire.ProtoMsg) {
	if s.p.peerLog.Allow(time.Now()) {
		s.log.Info("file transfer: "+what, "path", path, "error", peerError(m),
			"suppressed", s.p.peerLog.TakeSuppressed())
	}
}

// dispatch handles a message outside a transfer.
func (s *session) dispatch(m *wire.ProtoMsg) {
	switch m.Header.MsgType {
	case wire.FileStat:
		s.stat(m)
	case wire.FileGet:
		s.transfer(m, fdsDownload, s.download)
	case wire.FilePut:
		s.transfer(m, fdsUpload, s.upload)
	case wire.FileAck:
		if off, ok := m.Header.IntProp(wire.PropOffset); ok && off == s.finished {
			// The server acks a download's last window and then its EOF
			// with the same offset; the first ack completed it.
			return
		}
		s.replyError(m, msgNoTransfer)
	case wire.FileChunk:
		s.replyError(m, msgNoTransfer)
	case wire.FileError:
		s.peerAborted("error from the peer with no transfer running", "", m)
	default:
		s.replyError(m, "session: filetransfer message type '"+m.Header.MsgType+"' not supported")
	}
}

// during handles a message that arrives while a transfer runs and is not
// part of it; it reports whether the message was handled (false: the
// transfer must treat it as unexpected).
func (s *session) during(m *wire.ProtoMsg) bool {
	switch m.Header.MsgType {
	case wire.FileGet, wire.FilePut:
		s.replyError(m, msgInProgress)
		return true
	case wire.FileStat:
		s.stat(m)
		return true
	}
	return false
}

// send queues a frame; the wait for room is bounded by the ack timeout
// so that a stalled link cannot hold the goroutine for ever.
func (s *session) send(m *wire.ProtoMsg) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.p.opts.AckTimeout)
	defer cancel()
	return s.out.Send(ctx, m)
}

// replyError answers req with a file-transfer error of status 400.
func (s *session) replyError(req *wire.ProtoMsg, text string) {
	s.replyStatus(req, statusBadRequest, text)
}

// replyStatus answers req with a file-transfer error: the request's props
// copied back and {"err","msgtype","code"} (and msgid when the request had
// one); code is the HTTP status the server gives the user (status.go).
func (s *session) replyStatus(req *wire.ProtoMsg, code int, text string) {
	body := wire.FileErrorBody{Error: text, MessageType: req.Header.MsgType, MessageID: req.Header.StringProp(wire.PropMsgID), Code: code}
	b, err := wire.EncodeBody(body)
	if err != nil {
		s.log.Error("file transfer: encode error body", "error", err)
		return
	}
	reply := &wire.ProtoMsg{Header: req.Header.Clone(), Body: b}
	reply.Header.Proto, reply.Header.MsgType, reply.Header.SessionID = wire.ProtoFileTransfer, wire.FileError, s.sid
	if err := s.send(reply); err != nil {
		if s.p.refuseLog.Allow(time.Now()) {
			s.log.Info("file transfer: could not send an error reply", "error", err, "text", text,
				"suppressed", s.p.refuseLog.TakeSuppressed())
		}
	}
}

func peerError(m *wire.ProtoMsg) string {
	var e wire.FileErrorBody
	if err := wire.DecodeBody(m.Body, &e); err != nil {
		return "undecodable: " + err.Error()
	}
	return e.Error // clipped by the log handler, as every string here
}

// userName and groupName resolve ids for the owner limits; an id with no
// name is compared as its decimal text.
func userName(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		return u.Username
	}
	return s
}

func groupName(gid uint32) string {
	s := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(s); err == nil {
		return g.Name
	}
	return s
}
