// Package mockauth simulates Mender's authentication service
// (io.mender.AuthenticationManager) on D-Bus, for tests and demos. It hands
// out either a fixed token or one obtained from a (mock) Mender server the
// way a device authenticates, and can rotate, clear or set the token and
// make FetchJwtToken fail on request.
package mockauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/tether-agent/tether/internal/auth"
)

// DefaultMAC is the identity a simulated device presents to the server.
const DefaultMAC = "52:54:00:12:34:56"

// FetchFailure selects how FetchJwtToken misbehaves, to test clients.
type FetchFailure int

const (
	// FetchWorks re-authenticates normally.
	FetchWorks FetchFailure = iota
	// FetchRejected makes FetchJwtToken return false ("could not start");
	// nothing else happens.
	FetchRejected
	// FetchAuthFails makes FetchJwtToken return true and the following
	// authentication fail: the token is cleared and JwtTokenStateChange is
	// emitted with empty strings, as mender-auth 4.x does.
	FetchAuthFails
)

// String names the mode as the control protocol does.
func (f FetchFailure) String() string {
	switch f {
	case FetchWorks:
		return "none"
	case FetchRejected:
		return "reject"
	case FetchAuthFails:
		return "auth"
	default:
		return fmt.Sprintf("FetchFailure(%d)", int(f))
	}
}

// Options configure a Service. Without Server it is in fixed mode: it hands
// out Token and ServerURL. With Server it authenticates against that
// (mock) Mender server.
type Options struct {
	// Token and ServerURL are the fixed credentials (fixed mode).
	Token string
	// ServerURL is the URL GetJwtToken hands out; in server mode it
	// defaults to Server.
	ServerURL string
	// Server is the base URL of a Mender server to authenticate against.
	Server string
	// MAC is the device identity (server mode); default DefaultMAC.
	MAC string
	// Key is the device key (server mode); default: a new Ed25519 key.
	Key crypto.Signer
	// HTTPClient makes the auth requests; default: 10 s timeout.
	HTTPClient *http.Client
	// RetryMin and RetryMax bound the backoff between failed attempts
	// (server mode); defaults 500 ms and 10 s.
	RetryMin, RetryMax time.Duration
}

// authRun is one authentication, possibly retried; callers join it.
type authRun struct {
	done chan struct{}
	err  error // valid once done is closed
}

// Service is the simulated authentication service on one D-Bus connection.
type Service struct {
	log  *slog.Logger
	conn *dbus.Conn
	dev  *deviceAuth // nil in fixed mode
	opts Options

	ctx    context.Context // ends background authentication on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// emitMu orders each state change with its signal, so that listeners
	// see signals in the order the state changed.
	emitMu sync.Mutex

	mu         sync.Mutex
	token, url string
	fixedToken string // what a successful authentication yields in fixed mode
	fixedURL   string
	failure    FetchFailure
	fetchCount int
	run        *authRun
	closed     bool
}

type dbusMethods struct{ s *Service }

// GetJwtToken implements io.mender.Authentication1.GetJwtToken.
func (m dbusMethods) GetJwtToken() (string, string, *dbus.Error) {
	token, url := m.s.Credentials()
	return token, url, nil
}

// FetchJwtToken implements io.mender.Authentication1.FetchJwtToken.
func (m dbusMethods) FetchJwtToken() (bool, *dbus.Error) {
	m.s.mu.Lock()
	m.s.fetchCount++
	n := m.s.fetchCount
	m.s.mu.Unlock()
	ok := m.s.Fetch()
	m.s.log.Info("FetchJwtToken called", "count", n, "started", ok)
	return ok, nil
}

var introspection = introspect.NewIntrospectable(&introspect.Node{
	Name: string(auth.ObjectPath),
	Interfaces: []introspect.Interface{
		introspect.IntrospectData,
		{
			Name: auth.Interface,
			Methods: []introspect.Method{
				{Name: "GetJwtToken", Args: []introspect.Arg{
					{Name: "token", Type: "s", Direction: "out"},
					{Name: "server_url", Type: "s", Direction: "out"},
				}},
				{Name: "FetchJwtToken", Args: []introspect.Arg{
					{Name: "success", Type: "b", Direction: "out"},
				}},
			},
			Signals: []introspect.Signal{
				{Name: auth.SignalMember, Args: []introspect.Arg{
					{Name: "token", Type: "s"},
					{Name: "server_url", Type: "s"},
				}},
			},
		},
	},
})

// New exports the service on conn and takes the well-known name; it fails
// if another connection owns the name. In server mode it starts
// authenticating in the background; in fixed mode it announces its
// credentials at once. The caller keeps ownership of conn.
func New(log *slog.Logger, conn *dbus.Conn, opts Options) (*Service, error) {
	if opts.RetryMin <= 0 {
		opts.RetryMin = 500 * time.Millisecond
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(10*time.Second, opts.RetryMin)
	}
	s := &Service{log: log, conn: conn, opts: opts}
	if opts.Server != "" {
		if s.opts.ServerURL == "" {
			s.opts.ServerURL = opts.Server
		}
		key := opts.Key
		if key == nil {
			var err error
			if key, err = GenerateKey("ed25519"); err != nil {
				return nil, err
			}
		}
		mac := opts.MAC
		if mac == "" {
			mac = DefaultMAC
		}
		client := opts.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		s.dev = &deviceAuth{server: opts.Server, mac: mac, key: key, client: client}
	} else {
		s.token, s.url = opts.Token, opts.ServerURL
		s.fixedToken, s.fixedURL = opts.Token, opts.ServerURL
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	// Export before taking the name: a client reacting to NameOwnerChanged
	// must find the object.
	if err := conn.Export(dbusMethods{s}, auth.ObjectPath, auth.Interface); err != nil {
		return nil, fmt.Errorf("exporting %s: %w", auth.Interface, err)
	}
	if err := conn.Export(introspection, auth.ObjectPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		s.unexport()
		return nil, fmt.Errorf("exporting introspection: %w", err)
	}
	reply, err := conn.RequestName(auth.BusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		s.unexport()
		return nil, fmt.Errorf("requesting name %s: %w", auth.BusName, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		s.unexport()
		var owner string
		_ = conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, auth.BusName).Store(&owner)
		return nil, fmt.Errorf("name %s is already owned (by %q)", auth.BusName, owner)
	}
	if s.dev != nil {
		log.Info("auth service on the bus; authenticating", "server", opts.Server, "mac", s.dev.mac)
		s.startRun(false)
	} else {
		// A FetchJwtToken may already be changing the credentials: the
		// name is on the bus from here on.
		s.emitMu.Lock()
		s.mu.Lock()
		token, url := s.token, s.url
		s.mu.Unlock()
		log.Info("auth service on the bus with fixed credentials",
			"credentials", auth.Credentials{Token: token, ServerURL: url})
		s.emit(token, url)
		s.emitMu.Unlock()
	}
	return s, nil
}

// Credentials returns what GetJwtToken answers now.
func (s *Service) Credentials() (token, url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token, s.url
}

// Set hands out token and url from now on and announces them. In fixed
// mode later authentications (Fetch) hand them out again.
func (s *Service) Set(token, url string) {
	s.mu.Lock()
	if s.dev == nil {
		s.fixedToken, s.fixedURL = token, url
	}
	s.mu.Unlock()
	s.change(token, url, "set")
}

// Clear drops the credentials and announces empty ones, like a provider
// that lost its authorisation.
func (s *Service) Clear() {
	s.change("", "", "clear")
}

// Rotate re-authenticates and waits for the result: a new token from the
// server (server mode) or a freshly made-up one (fixed mode). If an
// authentication is already under way, Rotate waits for it and then runs
// its own, so the rotation is always announced.
func (s *Service) Rotate(ctx context.Context) error {
	s.mu.Lock()
	if s.dev == nil {
		s.fixedToken = "mock-" + randomHex(16)
		if s.fixedURL == "" {
			s.fixedURL = s.opts.ServerURL
		}
	}
	s.mu.Unlock()
	// A run already under way may have read the credentials before this
	// rotation: wait for it, then run once more so the rotation shows.
	for {
		run, fresh := s.startRunFresh(false)
		if run == nil {
			return errors.New("service closed")
		}
		select {
		case <-run.done:
		case <-ctx.Done():
			return fmt.Errorf("waiting for authentication: %w", ctx.Err())
		}
		if fresh {
			return run.err
		}
	}
}

// Fetch does what FetchJwtToken does, without counting as a call: it
// starts an authentication in the background, unless one is already under
// way, and reports whether one is (false when FetchRejected is set).
func (s *Service) Fetch() bool {
	s.mu.Lock()
	failure := s.failure
	s.mu.Unlock()
	if failure == FetchRejected {
		return false
	}
	return s.startRun(failure == FetchAuthFails) != nil
}

// SetFetchFailure makes later Fetch / FetchJwtToken calls misbehave.
func (s *Service) SetFetchFailure(f FetchFailure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// FetchCount reports how many FetchJwtToken calls came over D-Bus.
func (s *Service) FetchCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetchCount
}

// Close stops background authentication, gives up the name and removes
// the exported object. It does not close the connection.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	var errs []error
	if _, err := s.conn.ReleaseName(auth.BusName); err != nil {
		errs = append(errs, fmt.Errorf("releasing %s: %w", auth.BusName, err))
	}
	if err := s.unexport(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Service) unexport() error {
	return errors.Join(
		s.conn.Export(nil, auth.ObjectPath, auth.Interface),
		s.conn.Export(nil, auth.ObjectPath, "org.freedesktop.DBus.Introspectable"),
	)
}

// change sets the credentials and announces them.
func (s *Service) change(token, url, why string) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	s.token, s.url = token, url
	s.mu.Unlock()
	s.log.Info("credentials changed", "why", why, "credentials", auth.Credentials{Token: token, ServerURL: url})
	s.emit(token, url)
}

// emit must be called with emitMu held.
func (s *Service) emit(token, url string) {
	if err := s.conn.Emit(auth.ObjectPath, auth.SignalJwtTokenStateChange, token, url); err != nil {
		s.log.Warn("emitting JwtTokenStateChange", "err", err)
	}
}

// startRun joins the authentication under way or starts one; nil when
// the service is closed.
func (s *Service) startRun(fail bool) *authRun {
	run, _ := s.startRunFresh(fail)
	return run
}

// startRunFresh is startRun that also reports whether the run is a new one.
func (s *Service) startRunFresh(fail bool) (*authRun, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	if s.run != nil {
		return s.run, false
	}
	run := &authRun{done: make(chan struct{})}
	s.run = run
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := s.authenticate(fail)
		s.mu.Lock()
		run.err = err
		s.run = nil
		s.mu.Unlock()
		close(run.done)
	}()
	return run, true
}

// authenticate obtains credentials and announces the result.
func (s *Service) authenticate(fail bool) error {
	if fail {
		s.change("", "", "simulated authentication failure")
		return errors.New("simulated authentication failure")
	}
	if s.dev == nil {
		s.mu.Lock()
		token, url := s.fixedToken, s.fixedURL
		s.mu.Unlock()
		s.change(token, url, "authenticated (fixed)")
		return nil
	}
	wait := s.opts.RetryMin
	for attempt := 1; ; attempt++ {
		token, err := s.dev.request(s.ctx)
		if err == nil {
			s.change(token, s.opts.ServerURL, "authenticated")
			return nil
		}
		if s.ctx.Err() != nil {
			return fmt.Errorf("authentication abandoned: %w", s.ctx.Err())
		}
		s.log.Warn("authentication failed; retrying", "attempt", attempt, "err", err, "retry_in", wait)
		if attempt == 1 {
			// mender-auth 4.x announces every failed attempt as empty
			// credentials; once per run is enough for clients to react.
			s.change("", "", "authentication failed")
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return fmt.Errorf("authentication abandoned: %w", s.ctx.Err())
		}
		wait = min(2*wait, s.opts.RetryMax)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on Linux; a constant still rotates
		// visibly thanks to the caller's state change.
		return "0000"
	}
	return hex.EncodeToString(b)
}
