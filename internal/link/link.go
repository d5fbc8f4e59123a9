// Package link owns the device's one websocket to the server: it dials with
// the current credentials, reads and decodes frames for the router, writes
// every session's frames fairly through one writer, keeps the connection
// alive, and reconnects with exponential backoff and full jitter. When
// the server keeps dropping the link right after it opens, as it does when
// another agent holds this device's identity, it says so and stays away
// longer (conflict.go).
package link

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/reconnect"
	"github.com/tether-agent/tether/internal/wire"
	"github.com/tether-agent/tether/internal/wsclient"
)

// DevicePath is the device websocket endpoint (docs/protocol.md §1.1).
const DevicePath = "/api/devices/v1/deviceconnect/connect"

// Handler receives what the link reads. Its methods are called from the
// read loop and must not block.
type Handler interface {
	HandleMessage(m *wire.ProtoMsg)
	HandleMalformed(err *wire.DecodeError)
	// LinkDown is called after a connection ended; TokenCleared when the
	// auth service withdrew the credentials (all shells must stop).
	LinkDown()
	TokenCleared()
}

// Observer is told about traffic and state for metrics; it never steers.
type Observer interface {
	FrameIn()
	FrameOut()
	MalformedFrame(kind string)
	LinkUp()
	LinkDown()
	LinkReconnect()
	TokenChanged()
	// IdentityConflictClose counts a conflict close (conflict.go);
	// IdentityConflict says when an episode starts (true) and ends.
	IdentityConflictClose()
	IdentityConflict(active bool)
}

// Beater is a health loop handle (internal/health.Loop): the writer
// answers its Probe from its select; the reader parks while blocked in a
// read, whose deadline bounds it.
type Beater interface {
	Beat()
	Park()
	Unpark()
	Probe() <-chan struct{}
}

// Options configure the link.
type Options struct {
	Log            *slog.Logger
	CAFile         string // extra PEM CAs on top of the system pool
	SkipVerify     bool
	PingInterval   time.Duration
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	MaxMessageSize int
	// LatencyTarget bounds the bytes in flight to the server to what the
	// path drains in about this long (pace.go); 0 turns pacing off.
	LatencyTarget time.Duration
	// CongestionControl names the TCP congestion control for the link's
	// socket (TCP_CONGESTION, e.g. "bbr"); "" keeps the kernel's default.
	CongestionControl string
	BackoffBase       time.Duration
	BackoffMax        time.Duration
	FirstJitter       time.Duration // random delay before redialling after a long-lived link drops
	StartJitter       time.Duration // random delay before the first dial after start
	// Refresh asks the auth service for a new token (after a 401).
	Refresh func()
	// Reader and Writer are health handles for the two loops; optional.
	Reader, Writer Beater
	Observer       Observer
	// State is told every state change in words, for sd_notify STATUS.
	State func(up bool, detail string)
	// Alert sets a standing warning about the link for the status line
	// (another agent holds this device's identity); "" clears it.
	Alert func(text string)
}

// Link is the connection manager.
type Link struct {
	opts    Options
	log     *slog.Logger
	handler Handler
	mux     *mux.Mux
	dialer  *wsclient.Dialer
	// bodies lends decoded chunk bodies; an upload gives each back once
	// written, so a bulk upload makes no garbage per chunk.
	bodies *wire.BodyPool

	// Used by Run's goroutine only: the identity conflict detector and
	// the backoff that applies while it reports an episode.
	conflict    conflictTracker
	conflictMax time.Duration
	conflictBo  *reconnect.Backoff

	mu        sync.Mutex
	connected bool
	lastUp    time.Time
}

// New builds a link; frames to send come from mux.
func New(opts Options, h Handler, m *mux.Mux) (*Link, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	tlsConf, err := tlsConfig(opts.CAFile, opts.SkipVerify)
	if err != nil {
		return nil, err
	}
	d := &wsclient.Dialer{
		Proxy:            wsclient.ProxyFromEnvironment,
		HandshakeTimeout: 30 * time.Second,
		TLSConfig:        tlsConf,
		ReadBufferSize:   64 << 10,
		WriteBufferSize:  64 << 10,
		NetDial:          dialTCP(opts.WriteTimeout, opts.CongestionControl, opts.Log),
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.Refresh == nil {
		opts.Refresh = func() {}
	}
	if opts.State == nil {
		opts.State = func(bool, string) {}
	}
	if opts.Alert == nil {
		opts.Alert = func(string) {}
	}
	return &Link{opts: opts, log: opts.Log, handler: h, mux: m, dialer: d, bodies: wire.NewBodyPool(bodyPoolKeep),
		conflict: conflictTracker{p: defaultConflictPolicy()}, conflictMax: max(opts.BackoffMax, conflictBackoffMax)}, nil
}

func tlsConfig(caFile string, skip bool) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skip} //nolint:gosec // off unless configured
	if caFile == "" {
		return c, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read server certificate %s: %w", caFile, err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("server certificate %s: no PEM certificate found", caFile)
	}
	c.RootCAs = pool
	return c, nil
}

// DeviceURL maps the server URL from the auth service to the websocket URL:
// https→wss, http→ws, the endpoint path appended. Unlike upstream, a path
// prefix (a server behind a reverse proxy path) is kept.
func DeviceURL(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("server URL: %w", err)
	}
	if u.Host == "" {
		return "", fmt.Errorf("server URL %q has no host", server)
	}
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	case "http":
		u.Scheme = "ws"
	}
	u.Path = strings.TrimRight(u.Path, "/") + DevicePath
	u.RawPath, u.RawQuery, u.Fragment, u.User = "", "", "", nil
	return u.String(), nil
}

// Connected reports whether a connection is up, and when the last one came up.
func (l *Link) Connected() (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connected, l.lastUp
}

// stableAfter is how long a connection must have lasted for its drop to be
// a fresh start (a short random delay, then redial); a server that accepts
// and drops at once is backed off like one that refuses.
const stableAfter = 10 * time.Second

// Run keeps the link up with the newest credentials until ctx ends.
func (l *Link) Run(ctx context.Context, creds <-chan auth.Credentials) error {
	l.parkLoops()
	var cur auth.Credentials
	bo := reconnect.New(reconnect.Policy{Base: l.opts.BackoffBase, Max: l.opts.BackoffMax,
		FirstJitter: l.opts.FirstJitter, StartJitter: l.opts.StartJitter, StableAfter: stableAfter})
	l.conflictBo = reconnect.New(reconnect.Policy{Base: l.opts.BackoffBase, Max: l.conflictMax, StableAfter: stableAfter})
	dials := 0
	for {
		if !cur.Authorized() {
			l.opts.State(false, "waiting for authorization")
			cur = l.awaitAuthorization(ctx, cur, creds)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if dials++; dials > 1 {
			l.opts.Observer.LinkReconnect()
		}
		connCtx, cancel := context.WithCancel(ctx)
		var next *auth.Credentials
		watcherDone := make(chan struct{})
		go func() {
			// New credentials end the connection or the backoff wait;
			// the same ones again (a flap the auth source coalesced) do
			// not: dropping a working link for them is needless.
			defer close(watcherDone)
			for {
				select {
				case c := <-creds:
					if c == cur {
						continue
					}
					next = &c
					cancel()
					return
				case <-connCtx.Done():
					return
				}
			}
		}()
		if dials == 1 {
			// Devices that boot together would otherwise all dial in
			// the same instant (docs/benchmarks.md, "Fleet bench").
			if wait := bo.AtStart(); wait > 0 {
				l.opts.State(false, fmt.Sprintf("first dial in %s", wait.Round(time.Millisecond)))
				sleepCtx(connCtx, wait)
			}
		}
		var uptime time.Duration
		var ended, err error
		if connCtx.Err() == nil {
			uptime, ended, err = l.connectAndServe(connCtx, cur)
		}
		if connCtx.Err() == nil {
			var wait time.Duration
			if err != nil {
				wait = bo.AfterFailure(retryAfter(err))
				l.log.Warn("server connection failed", "error", err, "attempt", bo.Attempt())
				if isUnauthorized(err) {
					l.opts.Refresh()
				}
			} else {
				wait = l.afterLink(uptime, ended, bo)
			}
			if wait > 0 {
				l.opts.State(false, fmt.Sprintf("reconnecting in %s", wait.Round(time.Millisecond)))
				sleepCtx(connCtx, wait)
			}
		}
		cancel()
		<-watcherDone
		if next != nil {
			cur = l.adopt(cur, *next)
			bo.Reset()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// unauthorizedRefresh is how often an unauthorised device asks the auth
// service to authenticate: mender-auth 4.x does not do it by itself.
const unauthorizedRefresh = time.Minute

// awaitAuthorization waits for the next credentials, asking the auth
// service for a token now and then while none comes.
func (l *Link) awaitAuthorization(ctx context.Context, cur auth.Credentials, creds <-chan auth.Credentials) auth.Credentials {
	t := time.NewTicker(unauthorizedRefresh)
	defer t.Stop()
	first := time.NewTimer(time.Second) // the initial GetJwtToken may still be on its way
	defer first.Stop()
	for {
		select {
		case <-ctx.Done():
			return cur
		case c := <-creds:
			return l.adopt(cur, c)
		case <-first.C:
			l.opts.Refresh()
		case <-t.C:
			l.opts.Refresh()
		}
	}
}

// adopt switches to new credentials; an empty token stops every shell, as
// the auth service's withdrawal means the device lost its authorization.
func (l *Link) adopt(old, c auth.Credentials) auth.Credentials {
	if old != c {
		l.opts.Observer.TokenChanged()
	}
	if !c.Authorized() {
		if old.Authorized() {
			l.log.Warn("authorization withdrawn by the auth service; stopping all sessions", "event", "token_change")
		}
		l.handler.TokenCleared()
		return c
	}
	if old != c {
		l.log.Info("new credentials from the auth service", "event", "token_change", "server_url", c.ServerURL)
	}
	return c
}

type statusError struct {
	code       int
	retryAfter time.Duration // from a 503 or 429
	err        error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func retryAfter(err error) time.Duration {
	var se *statusError
	if errors.As(err, &se) {
		return se.retryAfter
	}
	return 0
}

// statusUnauthorized is HTTP's 401 (net/http is not linked).
const statusUnauthorized = 401

func isUnauthorized(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.code == statusUnauthorized
}

// connectAndServe dials and serves one connection. It returns how long the
// connection was up and what ended it, or the dial error if there was no
// connection.
func (l *Link) connectAndServe(ctx context.Context, c auth.Credentials) (uptime time.Duration, ended, err error) {
	target, err := DeviceURL(c.ServerURL)
	if err != nil {
		return 0, nil, err
	}
	hdr := wsclient.Header{"Authorization": []string{"Bearer " + c.Token}}
	conn, err := l.dialer.Dial(ctx, target, hdr)
	if err != nil {
		var he *wsclient.HandshakeError
		if errors.As(err, &he) {
			return 0, nil, &statusError{code: he.StatusCode, retryAfter: reconnect.RetryAfter(he.StatusCode, he.Header.Get("Retry-After"), time.Now()),
				err: fmt.Errorf("dial %s: %s: %s", target, he.Status, bytes.TrimSpace(he.Body))}
		}
		return 0, nil, fmt.Errorf("dial %s: %w", target, err)
	}
	start := time.Now()
	ended = l.serve(ctx, conn, target)
	return time.Since(start), ended, nil
}

// serve runs one connection until it ends and returns the first failure
// that ended it.
func (l *Link) serve(ctx context.Context, conn *wsclient.Conn, target string) error {
	l.mu.Lock()
	l.connected, l.lastUp = true, time.Now()
	l.mu.Unlock()
	l.log.Info("connected to server", "event", "link_up", "url", target)
	l.opts.Observer.LinkUp()
	l.opts.State(true, "connected to "+target)
	var wg sync.WaitGroup
	done := make(chan struct{})
	// The reader, the writer, producers writing directly and this loop
	// may all fail at once: done is closed exactly once.
	var doneOnce sync.Once
	closeDone := func() { doneOnce.Do(func() { close(done) }) }
	// cause keeps the first failure: the writer's timeout, not the
	// reader's "use of closed network connection" that follows it.
	var cause atomicError
	fail := func(err error) {
		if err != nil {
			cause.set(err)
		}
		closeDone()
	}
	// One pacer per connection: what it learnt of the path goes with it.
	pace := newPacer(l.opts.LatencyTarget)
	if l.opts.LatencyTarget > 0 {
		l.mux.Gate(func() bool { return pace.allow(time.Now()) })
	}
	// Producers may write a frame themselves when the writer is idle.
	l.mux.Up(func(f []byte) error {
		err := l.writeFrame(conn, f, pace)
		if err != nil {
			fail(err)
		}
		return err
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		fail(l.readLoop(conn, pace))
	}()
	go func() {
		defer wg.Done()
		fail(l.writeLoop(conn, done, pace))
	}()
	// During an identity conflict episode, a connection that stays up
	// long enough ends it while it is still up, so that the status line
	// and the metric clear on the agent that holds the link.
	var settled <-chan time.Time
	if l.conflict.active {
		t := time.NewTimer(l.conflict.p.settled)
		defer t.Stop()
		settled = t.C
	}
	for running := true; running; {
		select {
		case <-ctx.Done():
			cause.set(errors.New("closed by the device"))
			// Unlike upstream, say goodbye properly before closing.
			_ = conn.WriteControl(wsclient.CloseMessage,
				wsclient.FormatCloseMessage(wsclient.CloseNormalClosure, ""), time.Now().Add(time.Second))
			closeDone()
			running = false
		case <-done:
			running = false
		case <-settled:
			settled = nil
			l.conflictOver(time.Now())
		}
	}
	conn.Close() // unblocks the reader
	wg.Wait()
	l.mux.Down()
	l.parkLoops()
	l.mu.Lock()
	l.connected = false
	l.mu.Unlock()
	reason := firstErr(cause.get())
	l.log.Info("disconnected from server", "event", "link_down", "reason", reason)
	l.opts.Observer.LinkDown()
	l.handler.LinkDown()
	return cause.get()
}

func firstErr(errs ...error) string {
	for _, e := range errs {
		var ce *wsclient.CloseError
		switch {
		case e == nil:
			continue
		case errors.As(e, &ce) && (ce.Code == wsclient.CloseNormalClosure || ce.Code == wsclient.CloseGoingAway):
			// A server shutting down or ending the link on purpose is
			// not a failure; the close error's text would read like one.
			name := map[int]string{wsclient.CloseNormalClosure: "normal closure", wsclient.CloseGoingAway: "going away"}[ce.Code]
			if ce.Text != "" {
				name += ": " + ce.Text
			}
			return fmt.Sprintf("closed normally by the server (%d %s)", ce.Code, name)
		}
		return e.Error()
	}
	return "closed"
}

func (l *Link) parkLoops() {
	if l.opts.Reader != nil {
		l.opts.Reader.Park()
	}
	if l.opts.Writer != nil {
		l.opts.Writer.Park()
	}
}

func (l *Link) beat(b Beater) {
	if b != nil {
		b.Beat()
	}
}

func (l *Link) park(b Beater) {
	if b != nil {
		b.Park()
	}
}

func (l *Link) unpark(b Beater) {
	if b != nil {
		b.Unpark()
	}
}

// probe is b's probe channel; nil (never ready) without a health handle.
func probe(b Beater) <-chan struct{} {
	if b == nil {
		return nil
	}
	return b.Probe()
}

// bodyPoolKeep is how many free chunk bodies the link keeps (128 KiB):
// an upload's window of unacknowledged chunks, with room to spare.
const bodyPoolKeep = 32

// readLoop reads frames until the connection fails. Any frame, data or
// control, refreshes the read deadline (upstream only counted ping/pong).
func (l *Link) readLoop(conn *wsclient.Conn, pace *pacer) error {
	if l.opts.Reader != nil {
		l.opts.Reader.Unpark()
	}
	refresh := func() {
		_ = conn.SetReadDeadline(time.Now().Add(l.opts.ReadTimeout))
		l.beat(l.opts.Reader)
	}
	refresh()
	conn.SetPingHandler(func(data []byte) error {
		refresh()
		err := conn.WriteControl(wsclient.PongMessage, data, time.Now().Add(l.opts.WriteTimeout))
		if errors.Is(err, wsclient.ErrCloseSent) {
			return nil
		}
		return err
	})
	conn.SetPongHandler(func([]byte) error {
		l.mux.SetFrameHint(pace.ponged(time.Now()))
		refresh()
		return nil
	})
	limit := int64(l.opts.MaxMessageSize)
	// One buffer and one limiter for every frame: the frame is decoded
	// (and copied out) before the next one is read.
	var w bytes.Buffer
	lr := &io.LimitedReader{}
	for {
		// Blocked in a read the reader cannot answer a probe, and need
		// not: the read deadline (ReadTimeout, renewed by every frame and
		// the server's pings) ends the read by itself. Parked there, the
		// reader is stale only if handling a frame wedges.
		l.park(l.opts.Reader)
		typ, r, err := conn.NextReader()
		l.unpark(l.opts.Reader)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		refresh()
		// Read at most limit+1 bytes: an oversized message is discarded
		// and reported, and the link stays up (upstream dropped it).
		w.Reset()
		lr.R, lr.N = r, limit+1
		n, err := w.ReadFrom(lr)
		if err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		buf := w.Bytes()
		l.opts.Observer.FrameIn()
		if n > limit {
			skipped, err := io.Copy(io.Discard, r)
			if err != nil {
				return fmt.Errorf("discard oversized message: %w", err)
			}
			l.malformed(&wire.DecodeError{Kind: wire.MalformedOversized,
				Err: fmt.Errorf("message of %d bytes exceeds the %d byte limit", n+skipped, limit)})
			w = bytes.Buffer{} // do not keep an oversized buffer
			continue
		}
		if typ != wsclient.BinaryMessage && typ != wsclient.TextMessage {
			continue
		}
		// The decoded message owns its strings and body (the decoder
		// copies them), so buf can be reused for the next frame.
		msg, err := wire.UnmarshalPooled(buf, l.bodies)
		if err != nil {
			var de *wire.DecodeError
			if !errors.As(err, &de) {
				de = &wire.DecodeError{Kind: wire.MalformedSyntax, Err: err}
			}
			l.malformed(de)
			continue
		}
		l.traceMsg("frame in", msg, len(buf))
		l.handler.HandleMessage(msg)
	}
}

func (l *Link) malformed(de *wire.DecodeError) {
	l.opts.Observer.MalformedFrame(string(de.Kind))
	l.handler.HandleMalformed(de)
}

// writeLoop is the only writer of data frames. It sends frames from the mux
// in round-robin order while the pacer allows, pings to measure the path
// as the pacer asks, and a keep-alive ping every PingInterval. Idle, it
// wakes only for the keep-alive and the health monitor's probe.
func (l *Link) writeLoop(conn *wsclient.Conn, done <-chan struct{}, pace *pacer) error {
	if l.opts.Writer != nil {
		l.opts.Writer.Unpark()
	}
	ping := time.NewTicker(l.opts.PingInterval)
	defer ping.Stop()
	asked := probe(l.opts.Writer)
	sendPing := func() error {
		// The pacer marks the bytes before the ping, which its pong
		// confirms; the keep-alive counts as a measuring ping too.
		now := time.Now()
		pace.pinged(now)
		if err := conn.WriteControl(wsclient.PingMessage, []byte("60"), now.Add(l.opts.WriteTimeout)); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return nil
	}
	// The first ping goes before any frame: its round trip, with nothing
	// ahead of it, is the path's own, which the pacer's window adds to
	// the target (a backlog queued across a reconnect would inflate it).
	if l.opts.LatencyTarget > 0 {
		if err := sendPing(); err != nil {
			return err
		}
	}
	for {
		open := true
		for {
			if open = pace.allow(time.Now()); !open {
				break
			}
			f := l.mux.Next()
			if f == nil {
				break
			}
			err := l.writeFrame(conn, f, pace)
			l.mux.Written(err)
			if err != nil {
				return err
			}
			if pace.probeDue(time.Now(), false) {
				if err := sendPing(); err != nil {
					return err
				}
			}
			l.beat(l.opts.Writer)
			select {
			case <-done:
				return nil
			default:
			}
		}
		// Direct writes do not ask for a ping; while the window is shut
		// one must be out, or no pong would open it.
		if pace.probeDue(time.Now(), !open) {
			if err := sendPing(); err != nil {
				return err
			}
		}
		// While the pacer holds the writer back, new frames need not
		// wake it: the next pong does.
		wake := l.mux.Wake()
		if !open {
			wake = nil
		}
		select {
		case <-done:
			return nil
		case <-wake:
		case <-pace.opened:
		case <-asked:
			l.beat(l.opts.Writer)
		case <-ping.C:
			if err := sendPing(); err != nil {
				return err
			}
		}
	}
}

// writeFrame writes one data frame; the mux makes sure only one goroutine
// does at a time. The connection enforces the write timeout as "no
// progress for that long" (progressConn), so a slow but live server never
// trips it.
func (l *Link) writeFrame(conn *wsclient.Conn, f []byte, pace *pacer) error {
	if err := conn.WriteMessage(wsclient.BinaryMessage, f); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	pace.wrote(len(f))
	l.traceFrame("frame out", f)
	l.opts.Observer.FrameOut()
	return nil
}

// atomicError keeps the first error set.
type atomicError struct {
	mu  sync.Mutex
	err error
}

func (a *atomicError) set(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
}

func (a *atomicError) get() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

type nopObserver struct{}

func (nopObserver) FrameIn()               {}
func (nopObserver) FrameOut()              {}
func (nopObserver) MalformedFrame(string)  {}
func (nopObserver) LinkUp()                {}
func (nopObserver) LinkDown()              {}
func (nopObserver) LinkReconnect()         {}
func (nopObserver) TokenChanged()          {}
func (nopObserver) IdentityConflictClose() {}
func (nopObserver) IdentityConflict(bool)  {}
