package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
)

// DBusOptions configure a DBus source. Zero values mean the defaults.
type DBusOptions struct {
	// Address of the bus; "" is the system bus (DBUS_SYSTEM_BUS_ADDRESS or
	// the platform default).
	Address string
	// CallTimeout bounds every method call and the connection handshake;
	// default 5 s, as upstream.
	CallTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to reach
	// the bus; defaults 100 ms and 2 s.
	RetryMin, RetryMax time.Duration
	// RefreshMinInterval is the least time between two FetchJwtToken calls;
	// default 10 s. Refresh requests within it are deferred, not lost.
	RefreshMinInterval time.Duration
}

func (o *DBusOptions) setDefaults() {
	if o.CallTimeout <= 0 {
		o.CallTimeout = 5 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 100 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 2 * time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.RefreshMinInterval <= 0 {
		o.RefreshMinInterval = 10 * time.Second
	}
}

// DBus follows Mender's authentication service on D-Bus (docs/protocol.md §9):
// it asks for the token at start and whenever the service (re)appears,
// follows JwtTokenStateChange from the current owner of the name only,
// keeps the last credentials while the service is away, and survives the
// bus itself going away and coming back.
type DBus struct {
	log     *slog.Logger
	opts    DBusOptions
	box     *mailbox
	refresh chan struct{} // capacity 1: a pending Refresh request
	running atomic.Bool
}

var _ Source = (*DBus)(nil)

// NewDBus returns a DBus source; it does nothing until Run.
func NewDBus(log *slog.Logger, opts DBusOptions) *DBus {
	opts.setDefaults()
	return &DBus{
		log:     log,
		opts:    opts,
		box:     newMailbox(),
		refresh: make(chan struct{}, 1),
	}
}

// Updates implements Source.
func (d *DBus) Updates() <-chan Credentials { return d.box.ch }

// Refresh implements Source: FetchJwtToken is called soon, but not sooner
// than RefreshMinInterval after the previous call, and requests made
// meanwhile are merged into one. Requests made while the bus is away are
// served once it is back.
func (d *DBus) Refresh() {
	select {
	case d.refresh <- struct{}{}:
	default:
	}
}

// errConnLost ends a session whose bus connection dropped.
var errConnLost = errors.New("bus connection lost")

// runState survives reconnections to the bus.
type runState struct {
	creds Credentials // last known credentials, kept while the service is away

	connErr        string // last reported connection error, for log deduplication
	everConnected  bool
	absentReported bool // "service not on the bus" has been logged

	refreshPending bool
	lastFetch      time.Time
	fetchErr       string // last reported FetchJwtToken problem
	// fetchAwaitsOwner: a FetchJwtToken found no service; the pending
	// refresh waits until the name has an owner again.
	fetchAwaitsOwner bool
}

// Run implements Source. It returns nil when ctx is done, after closing its
// bus connection; it fails only if called twice.
func (d *DBus) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("auth: DBus.Run called more than once")
	}
	st := &runState{}
	delay := d.opts.RetryMin
	for {
		conn, closeConn, queue, err := d.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if kind := connErrorKind(err); kind != st.connErr {
				st.connErr = kind
				d.log.Warn("D-Bus unavailable; retrying quietly until it is back",
					"address", d.addressForLog(), "err", err)
			}
			// The consumer must learn it is unauthorised even while
			// there is no bus.
			d.box.put(st.creds)
			if !sleep(ctx, delay) {
				return nil
			}
			delay = min(2*delay, d.opts.RetryMax)
			continue
		}
		if st.connErr != "" {
			d.log.Info("D-Bus connection established", "address", d.addressForLog())
		} else if st.everConnected {
			d.log.Info("D-Bus connection re-established", "address", d.addressForLog())
		}
		st.connErr, st.everConnected = "", true
		delay = d.opts.RetryMin

		s := &session{d: d, st: st, conn: conn, queue: queue}
		err = s.run(ctx)
		s.stop()
		closeConn()
		if ctx.Err() != nil {
			return nil
		}
		d.log.Warn("D-Bus session ended; reconnecting", "err", err)
	}
}

func (d *DBus) addressForLog() string {
	if d.opts.Address == "" {
		return "system bus"
	}
	return d.opts.Address
}

// connect opens a private connection whose signals go to a signalQueue.
// The handshake (auth, Hello) has no timeout in godbus; closing the
// connection through its context bounds it.
func (d *DBus) connect(ctx context.Context) (*dbus.Conn, func(), *signalQueue, error) {
	queue := newSignalQueue()
	cctx, cancel := context.WithCancel(ctx)
	opts := []dbus.ConnOption{dbus.WithContext(cctx), dbus.WithSignalHandler(queue)}
	timer := time.AfterFunc(d.opts.CallTimeout, cancel)
	var (
		conn *dbus.Conn
		err  error
	)
	if d.opts.Address == "" {
		conn, err = dbus.ConnectSystemBus(opts...)
	} else {
		conn, err = dbus.Connect(d.opts.Address, opts...)
	}
	if !timer.Stop() && err == nil {
		_ = conn.Close()
		err = fmt.Errorf("bus handshake took longer than %v", d.opts.CallTimeout)
	}
	if err != nil {
		cancel()
		return nil, nil, nil, fmt.Errorf("connecting to D-Bus: %w", err)
	}
	return conn, func() { _ = conn.Close(); cancel() }, queue, nil
}

// pendingCall is a method call in flight. Each has its own reply channel:
// godbus's reader blocks on a full one.
type pendingCall struct {
	call   *dbus.Call
	cancel context.CancelFunc
	gen    uint64 // owner generation the call was made for
}

func (p *pendingCall) done() <-chan *dbus.Call {
	if p == nil {
		return nil
	}
	return p.call.Done
}

// session is the life of one bus connection.
type session struct {
	d     *DBus
	st    *runState
	conn  *dbus.Conn
	queue *signalQueue

	owner    string        // unique name owning BusName, "" if none
	ownerSeq dbus.Sequence // sequence of the message that told us owner
	gen      uint64        // incremented on every owner change

	appliedSeq dbus.Sequence // sequence of the last applied credentials

	get   *pendingCall // GetJwtToken in flight
	fetch *pendingCall // FetchJwtToken in flight

	refreshTimer *time.Timer
	refreshC     <-chan time.Time
}

func (s *session) stop() {
	if s.get != nil {
		s.get.cancel()
	}
	if s.fetch != nil {
		s.fetch.cancel()
	}
	if s.refreshTimer != nil {
		s.refreshTimer.Stop()
	}
}

func (s *session) run(ctx context.Context) error {
	d := s.d
	// Subscribe before asking, so no change slips between answer and
	// subscription; signal sequence numbers then tell what is newer.
	if err := s.addMatch(ctx,
		dbus.WithMatchInterface(Interface),
		dbus.WithMatchMember(SignalMember),
		dbus.WithMatchObjectPath(ObjectPath),
	); err != nil {
		return err
	}
	if err := s.addMatch(ctx,
		dbus.WithMatchSender(busDriverName),
		dbus.WithMatchInterface(busDriverName),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchObjectPath("/org/freedesktop/DBus"),
		dbus.WithMatchArg(0, BusName),
	); err != nil {
		return err
	}
	if err := s.resync(ctx); err != nil {
		return err
	}
	s.maybeFetch() // a Refresh from before (re)connecting

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.conn.Context().Done():
			return errConnLost
		case <-s.queue.notify:
			sigs, overflow := s.queue.take()
			for _, sig := range sigs {
				s.handleSignal(sig)
			}
			if overflow {
				d.log.Warn("D-Bus signal flood; resynchronising")
				if err := s.resync(ctx); err != nil {
					return err
				}
			}
		case call := <-s.get.done():
			s.handleGet(call)
		case call := <-s.fetch.done():
			s.handleFetch(call)
		case <-d.refresh:
			s.st.refreshPending = true
			s.maybeFetch()
		case <-s.refreshC:
			s.refreshTimer, s.refreshC = nil, nil
			s.maybeFetch()
		}
	}
}

func (s *session) addMatch(ctx context.Context, opts ...dbus.MatchOption) error {
	cctx, cancel := context.WithTimeout(ctx, s.d.opts.CallTimeout)
	defer cancel()
	if err := s.conn.AddMatchSignalContext(cctx, opts...); err != nil {
		return fmt.Errorf("adding D-Bus match rule: %w", err)
	}
	return nil
}

// resync learns the current owner of the service's name and asks it for
// the credentials.
func (s *session) resync(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.d.opts.CallTimeout)
	defer cancel()
	call := s.conn.BusObject().CallWithContext(cctx, "org.freedesktop.DBus.GetNameOwner", 0, BusName)
	var owner string
	if err := call.Store(&owner); err != nil {
		var dbusErr dbus.Error
		if !errors.As(err, &dbusErr) || dbusErr.Name != "org.freedesktop.DBus.Error.NameHasNoOwner" {
			return fmt.Errorf("asking the bus for the owner of %s: %w", BusName, err)
		}
		owner = ""
	}
	if changed := s.setOwner(owner, call.ResponseSequence); !changed || owner == "" {
		// Without an owner, ask anyway: the bus may start the service
		// (D-Bus activation), as upstream relies on; if it cannot, we
		// learn that at once.
		s.requestToken()
	}
	return nil
}

func (s *session) handleSignal(sig *dbus.Signal) {
	d := s.d
	switch sig.Name {
	case signalNameOwnerChanged:
		if sig.Sender != busDriverName && sig.Sender != "" {
			// Only the bus driver may tell us about owners; anything else
			// is a peer sending it to us directly.
			return
		}
		var name, oldOwner, newOwner string
		if err := dbus.Store(sig.Body, &name, &oldOwner, &newOwner); err != nil || name != BusName {
			return
		}
		if sig.Sequence <= s.ownerSeq {
			return // older than the owner we already know
		}
		s.setOwner(newOwner, sig.Sequence)
	case SignalJwtTokenStateChange:
		if sig.Path != ObjectPath {
			return
		}
		if s.owner == "" || sig.Sender != s.owner {
			d.log.Debug("ignoring JwtTokenStateChange not sent by the owner of "+BusName,
				"sender", sig.Sender, "owner", s.owner)
			return
		}
		var c Credentials
		if err := dbus.Store(sig.Body, &c.Token, &c.ServerURL); err != nil {
			d.log.Warn("ignoring malformed JwtTokenStateChange", "signature", signatureOf(sig.Body), "err", err)
			return
		}
		s.apply(c, sig.Sequence, "JwtTokenStateChange")
	}
}

// setOwner records the owner of BusName (possibly none) as of seq and, if
// it is a new one, asks it for the token. It reports whether the owner
// changed.
func (s *session) setOwner(owner string, seq dbus.Sequence) bool {
	d := s.d
	s.ownerSeq = seq
	if owner == s.owner && s.gen != 0 {
		return false
	}
	s.owner = owner
	s.gen++
	if owner == "" {
		if s.st.creds.Authorized() {
			d.log.Warn("auth service "+BusName+" is not on the bus; keeping the last credentials until it returns",
				"credentials", s.st.creds)
		} else if !s.st.absentReported {
			d.log.Info("auth service " + BusName + " is not on the bus; waiting for it")
		}
		s.st.absentReported = true
		return true
	}
	s.st.absentReported = false
	d.log.Info("auth service "+BusName+" is on the bus; asking for the token", "owner", owner)
	s.requestToken()
	s.st.fetchAwaitsOwner = false
	s.maybeFetch()
	return true
}

// requestToken calls GetJwtToken, abandoning a call made for an earlier
// owner.
func (s *session) requestToken() {
	if s.get != nil {
		s.get.cancel()
	}
	s.get = s.call(MethodGetJwtToken)
}

func (s *session) call(method string) *pendingCall {
	ctx, cancel := context.WithTimeout(s.conn.Context(), s.d.opts.CallTimeout)
	// A nil channel makes godbus allocate one of capacity 1 for this call.
	call := s.conn.Object(BusName, ObjectPath).GoWithContext(ctx, method, 0, nil)
	return &pendingCall{call: call, cancel: cancel, gen: s.gen}
}

func (s *session) handleGet(call *dbus.Call) {
	d := s.d
	p := s.get
	s.get = nil
	p.cancel()
	if p.gen != s.gen {
		return // answer from a previous owner; a new call is under way
	}
	if call.Err != nil {
		if s.owner == "" && isServiceAbsent(call.Err) {
			// Already reported by setOwner; we wait for NameOwnerChanged.
			d.log.Debug("GetJwtToken: service not available", "err", call.Err)
		} else {
			d.log.Warn("GetJwtToken failed; waiting for JwtTokenStateChange", "err", call.Err)
		}
		d.box.put(s.st.creds) // first delivery even without an answer
		return
	}
	var c Credentials
	if err := call.Store(&c.Token, &c.ServerURL); err != nil {
		d.log.Warn("GetJwtToken returned an unexpected reply", "signature", signatureOf(call.Body), "err", err)
		d.box.put(s.st.creds)
		return
	}
	s.apply(c, call.ResponseSequence, "GetJwtToken")
}

// apply takes credentials learnt from a message with sequence seq, unless
// a later message was already applied: of a signal and a reply, the one
// that arrived last is the newest.
func (s *session) apply(c Credentials, seq dbus.Sequence, from string) {
	d := s.d
	if seq != dbus.NoSequence && seq < s.appliedSeq {
		d.log.Debug("ignoring stale credentials", "from", from)
		return
	}
	s.appliedSeq = seq
	if c != s.st.creds {
		d.log.Info("credentials changed", "from", from, "credentials", c, "authorized", c.Authorized())
		s.st.creds = c
	}
	d.box.put(c)
}

// maybeFetch calls FetchJwtToken if a refresh is pending, none is in
// flight, and the rate limit allows; otherwise it arms a timer.
func (s *session) maybeFetch() {
	st := s.st
	if !st.refreshPending || s.fetch != nil || s.refreshTimer != nil {
		return
	}
	if st.fetchAwaitsOwner && s.owner == "" {
		return // setOwner calls again when the service is back
	}
	if wait := s.d.opts.RefreshMinInterval - time.Since(st.lastFetch); !st.lastFetch.IsZero() && wait > 0 {
		s.refreshTimer = time.NewTimer(wait)
		s.refreshC = s.refreshTimer.C
		return
	}
	st.refreshPending = false
	st.lastFetch = time.Now()
	s.d.log.Info("asking the auth service for a new token (FetchJwtToken)")
	s.fetch = s.call(MethodFetchJwtToken)
}

func (s *session) handleFetch(call *dbus.Call) {
	d := s.d
	s.fetch.cancel()
	s.fetch = nil
	var ok bool
	err := call.Store(&ok)
	switch {
	case err != nil && isServiceAbsent(err):
		// Keep the request for when the service is back: mender-auth
		// 4.x does not authenticate on its own after starting. (If it
		// is back already, maybeFetch below retries, rate-limited.)
		s.st.refreshPending = true
		s.st.fetchAwaitsOwner = s.owner == ""
		d.log.Info("FetchJwtToken: auth service not on the bus; will ask again when it is back")
	case err != nil:
		if msg := err.Error(); msg != s.st.fetchErr {
			s.st.fetchErr = msg
			d.log.Warn("FetchJwtToken failed", "err", err)
		}
	case !ok:
		if msg := "refused"; msg != s.st.fetchErr {
			s.st.fetchErr = msg
			d.log.Warn("FetchJwtToken: the auth service could not start authenticating")
		}
	default:
		s.st.fetchErr = ""
	}
	s.maybeFetch() // a Refresh that came while this one was in flight
}

// connErrorKind classifies connection errors for log deduplication: a bus
// that is down or dying shows as a missing socket, a refused or reset
// connection or an early EOF by turns, which is one condition, not four.
func connErrorKind(err error) string {
	for _, e := range []error{syscall.ENOENT, syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, e) {
			return "bus unreachable"
		}
	}
	return err.Error()
}

func isServiceAbsent(err error) bool {
	var dbusErr dbus.Error
	if !errors.As(err, &dbusErr) {
		return false
	}
	switch dbusErr.Name {
	case "org.freedesktop.DBus.Error.ServiceUnknown",
		"org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.NoReply":
		return true
	}
	return false
}

func signatureOf(body []interface{}) string {
	return dbus.SignatureOf(body...).String()
}

// sleep waits for d or ctx; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
