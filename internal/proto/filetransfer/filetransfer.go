// Package filetransfer is proto 2 (docs/protocol.md §5): stat, download and
// upload of files in a router session, wire-exact with upstream, with
// limits that hold (§5.4) and every file operation done with the
// configured account's rights. See docs/file-transfer.md.
package filetransfer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tether-agent/tether/internal/config"
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
)

// Options configure the protocol.
type Options struct {
	Log *slog.Logger
	// Identity is the account every file operation runs as; nil means
	// the daemon's own (only sensible when the daemon is not root).
	Identity *Identity
	// Limits is the Limits tree of the configuration; its FileTransfer
	// part applies only when Enabled.
	Limits config.LimitsConfig
	// AckTimeout ends a transfer whose peer stays silent (default 60 s).
	AckTimeout time.Duration
	// QueueLength bounds each session's inbound queue (default 128).
	QueueLength int
	// StateDir (the runtime directory) holds the journal of uploads'
	// temporary files; New removes those a killed daemon left. "" = none.
	StateDir string
}

// Protocol serves proto 2. Its byte-rate limiters are device-global, as
// upstream's counters are.
type Protocol struct {
	opts   Options
	log    *slog.Logger
	res    resolver
	umask  uint32
	tx, rx *rate.Limiter
	wg     sync.WaitGroup

	journal *journal
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
	p := &Protocol{opts: o, log: o.Log.With("proto", "filetransfer")}
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

// Wait waits until every session's goroutine has ended (tests).
func (p *Protocol) Wait() { p.wg.Wait() }

// Open implements proto.Protocol.
func (p *Protocol) Open(sid string, out proto.Sender) proto.Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		p:      p,
		sid:    sid,
		out:    out,
		log:    p.log.With("session_id", sid),
		in:     make(chan *wire.ProtoMsg, p.opts.QueueLength),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(s.done)
		s.run()
	}()
	return s
}

// session is the protocol's state in one router session: one goroutine
// that owns at most one transfer.
type session struct {
	p   *Protocol
	sid string
	out proto.Sender
	log *slog.Logger

	in       chan *wire.ProtoMsg
	overflow atomic.Bool
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}

	// Owned by run's goroutine.
	pending  []*wire.ProtoMsg // taken from in but not handled yet
	finished int64            // total of the last completed download, for its late acks
}

// Handle implements proto.Session; it never blocks. A peer that outruns
// the protocol's window overflows the queue: its transfer is aborted.
func (s *session) Handle(m *wire.ProtoMsg) {
	select {
	case s.in <- m:
	default:
		if !s.overflow.Swap(true) {
			s.log.Warn("file transfer: inbound queue full; aborting the transfer", "queue", cap(s.in))
		}
	}
}

// Close implements proto.Session: the goroutine stops at once, and a
// running transfer removes its temporary file on its way out.
func (s *session) Close() { s.cancel() }

// next returns the next message, or nil when the session ends or the
// peer has been silent for the ack timeout (timedOut).
func (s *session) next(timeout time.Duration) (m *wire.ProtoMsg, timedOut bool) {
	if len(s.pending) > 0 {
		m = s.pending[0]
		s.pending = s.pending[1:]
		return m, false
	}
	var tc <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		tc = t.C
	}
	select {
	case m = <-s.in:
		return m, false
	case <-s.ctx.Done():
		return nil, false
	case <-tc:
		return nil, true
	}
}

// ready returns a message already queued, without waiting.
func (s *session) ready() *wire.ProtoMsg {
	select {
	case m := <-s.in:
		return m
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
		s.overflow.Store(false)
		s.dispatch(m)
	}
}

// dispatch handles a message outside a transfer.
func (s *session) dispatch(m *wire.ProtoMsg) {
	switch m.Header.MsgType {
	case wire.FileStat:
		s.stat(m)
	case wire.FileGet:
		s.download(m)
	case wire.FilePut:
		s.upload(m)
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
		s.log.Info("file transfer: error from the peer with no transfer running", "error", peerError(m))
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

// replyError answers req with a file-transfer error: the request's props
// copied back and {"err","msgtype"} (and msgid when the request had one).
func (s *session) replyError(req *wire.ProtoMsg, text string) {
	body := wire.FileErrorBody{Error: text, MessageType: req.Header.MsgType, MessageID: req.Header.StringProp(wire.PropMsgID)}
	b, err := wire.EncodeBody(body)
	if err != nil {
		s.log.Error("file transfer: encode error body", "error", err)
		return
	}
	reply := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.FileError,
		SessionID: s.sid, Properties: copyProps(req.Header.Properties)}, Body: b}
	if err := s.send(reply); err != nil {
		s.log.Info("file transfer: could not send an error reply", "error", err, "text", text)
	}
}

func copyProps(p map[string]interface{}) map[string]interface{} {
	if len(p) == 0 {
		return nil
	}
	c := make(map[string]interface{}, len(p))
	for k, v := range p {
		c[k] = v
	}
	return c
}

func peerError(m *wire.ProtoMsg) string {
	var e wire.FileErrorBody
	if err := wire.DecodeBody(m.Body, &e); err != nil {
		return "undecodable: " + err.Error()
	}
	return e.Error
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
