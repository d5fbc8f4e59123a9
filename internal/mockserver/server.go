package mockserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/mockserver/authapi"
	"github.com/tether-agent/tether/internal/wire"
)

// API paths served by the mock, identical to the real server's.
const (
	AuthRequestsPath     = authapi.Path
	DeviceConnectPath    = "/api/devices/v1/deviceconnect/connect"
	LoginPath            = "/api/management/v1/useradm/auth/login"
	DevicesPath          = "/api/management/v2/devauth/devices"
	DeviceConnectMgmtDir = "/api/management/v1/deviceconnect/devices/"
)

// Defaults of Options and the real server's fixed timings (docs/protocol.md §1.2).
const (
	DefaultUser               = "admin@tether.local"
	DefaultPassword           = "tether"
	DefaultDevicePingInterval = 30 * time.Second
	DefaultUserPingInterval   = 30 * time.Second
	DefaultReadTimeout        = 60 * time.Second
	DefaultSessionByteLimit   = 8 << 20
	DefaultTokenLifetime      = 24 * time.Hour

	// MessageSizeLimit is the server's websocket read limit.
	MessageSizeLimit = 8 << 20
	// pingPayload is what deviceconnect puts in its pings (its pong wait
	// in seconds).
	pingPayload  = "60"
	writeWait    = 10 * time.Second
	closeTimeout = time.Second
)

// ErrServerClosed is returned by waits that the server's Close ended.
var ErrServerClosed = errors.New("mock server closed")

// Options configures a Server. The zero value is a usable server.
type Options struct {
	// Log receives the server's logs; nil discards them.
	Log *slog.Logger
	// Users maps e-mail to password; nil means {DefaultUser: DefaultPassword}.
	Users map[string]string
	// SigningKey is the HS256 key of every JWT; nil means a random key.
	// Pass the same key to a restarted server to keep tokens valid.
	SigningKey []byte
	// DevicePingInterval is the period of websocket pings to devices
	// (default 30 s). Every write to the device restarts it, like the
	// real server's ticker reset.
	DevicePingInterval time.Duration
	// UserPingInterval is the period of websocket pings to user
	// connections (default 30 s).
	UserPingInterval time.Duration
	// ReadTimeout is the read deadline of device and user sockets,
	// refreshed by every frame and every ping/pong (default 60 s).
	ReadTimeout time.Duration
	// SessionByteLimit is how much terminal output one user connection may
	// receive before the server stops it (docs/protocol.md §8.1): 0 = 8 MiB
	// (unlimited when Lenient), negative = unlimited.
	SessionByteLimit int64
	// DeviceFrameLimit is the largest device frame the server relays (the
	// NATS payload limit between the real server's two sockets): a bigger
	// one ends the device link with 1011. 0 = 1 MiB, negative = none;
	// ignored when Lenient.
	DeviceFrameLimit int
	// Lenient turns off the real server's harsher rules (PROTOCOL.md
	// 2.9.1) for tests of behaviour only a forgiving server shows: user
	// sessions outlive a device link drop (kept for ReadTimeout and
	// relayed over the device's next connection), a replaced device
	// connection gets a close frame, a user leaving without a stop makes
	// the device get "user disconnected", no frame size limit beyond the
	// read limit, no byte-limit cut unless SessionByteLimit is set.
	Lenient bool
	// TokenLifetime is the validity of issued JWTs (default 24 h).
	TokenLifetime time.Duration
	// Strict makes a device connection end on an undecodable frame or on a
	// shell message without sid, as the real deviceconnect does. By
	// default such frames are counted (Device.malformedCount), logged and
	// skipped, so that a test can look at them.
	Strict bool
	// AllowedHosts are the host names, besides IP literals and
	// "localhost", that requests may name in their Host header. Any other
	// name is refused with 421: a web page whose name an attacker points
	// at the server's address (DNS rebinding) must not reach it.
	AllowedHosts []string
	// TLSConfig, when set, makes Start serve HTTPS and WSS with it (its
	// Certificates or GetCertificate); nil serves plain HTTP. The Mender
	// UI's terminal code only speaks wss:// to its own host, so a page
	// using it needs this. See SelfSignedCertificate for a demo
	// certificate.
	TLSConfig *tls.Config
	// ConnectLimit answers device connects above a rate with 503 "server
	// is starting up" (fleet.go); the zero value accepts every connect.
	ConnectLimit ConnectLimit
	// OnConnect, when set, is called for every request to the device
	// endpoint with the server's answer, from the request's goroutine:
	// it must return quickly.
	OnConnect func(ConnectEvent)
}

// Server is an in-process mock of the Mender server's device-auth,
// user-login, device-listing and deviceconnect APIs.
type Server struct {
	log      *slog.Logger
	opts     Options
	key      []byte
	users    map[string]string
	mux      *http.ServeMux
	handler  http.Handler // mux behind the Host and Origin guard
	hosts    map[string]bool
	upgrader websocket.Upgrader
	limit    *connectBucket

	mu        sync.Mutex
	closed    bool
	closedCh  chan struct{}
	changed   chan struct{} // closed and replaced on every connect/disconnect
	devices   map[string]*deviceRecord
	conns     map[string]*Device
	taps      map[string][]*subscription
	pending   map[string]int // device websockets being upgraded
	connects  map[string]int
	revoked   map[string]time.Time // device id → tokens issued up to then are invalid
	issued    map[string]time.Time // jti → exact issue time of this instance's device tokens
	loggedOut map[string]time.Time // jti → expiry of user tokens ended by logout
	httpSrv   *http.Server
	serveDone chan struct{}
	console   *console

	// parked holds, when Lenient, the user sessions of dropped devices.
	parked map[string]map[*userSession]*time.Timer

	// wg counts hijacked websocket handlers: http.Server.Shutdown does
	// not wait for them.
	wg sync.WaitGroup
}

// deviceRecord is what device authentication knows about a device.
type deviceRecord struct {
	id      string
	idData  string
	pubKey  string
	created time.Time
	updated time.Time
	left    time.Time // when its websocket last went down
}

// DeviceInfo describes a device known to the server.
type DeviceInfo struct {
	ID string
	// Status is the authentication status; devices are auto-accepted, so
	// it is always "accepted".
	Status string
	// Connected says whether a device websocket is up.
	Connected bool
	// IdentityData is the id_data JSON of its last authentication request
	// ("" for devices only known from a token).
	IdentityData string
	// Connects counts accepted device websockets.
	Connects int
}

// New builds a server; it serves nothing until Start or Handler is used.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Users == nil {
		opts.Users = map[string]string{DefaultUser: DefaultPassword}
	}
	if opts.DevicePingInterval <= 0 {
		opts.DevicePingInterval = DefaultDevicePingInterval
	}
	if opts.UserPingInterval <= 0 {
		opts.UserPingInterval = DefaultUserPingInterval
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	switch {
	case opts.SessionByteLimit == 0 && opts.Lenient:
		opts.SessionByteLimit = -1
	case opts.SessionByteLimit == 0:
		opts.SessionByteLimit = DefaultSessionByteLimit
	}
	switch {
	case opts.Lenient:
		opts.DeviceFrameLimit = -1
	case opts.DeviceFrameLimit == 0:
		opts.DeviceFrameLimit = DefaultDeviceFrameLimit
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = DefaultTokenLifetime
	}
	key := opts.SigningKey
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err))
		}
	}
	users := make(map[string]string, len(opts.Users))
	for k, v := range opts.Users {
		users[k] = v
	}
	s := &Server{
		log:       opts.Log,
		opts:      opts,
		key:       append([]byte(nil), key...),
		users:     users,
		closedCh:  make(chan struct{}),
		changed:   make(chan struct{}),
		devices:   make(map[string]*deviceRecord),
		conns:     make(map[string]*Device),
		pending:   make(map[string]int),
		connects:  make(map[string]int),
		revoked:   make(map[string]time.Time),
		issued:    make(map[string]time.Time),
		loggedOut: make(map[string]time.Time),
		hosts:     allowedHosts(opts.AllowedHosts),
		console:   newConsole(),
		limit:     newConnectBucket(opts.ConnectLimit),
	}
	s.upgrader = websocket.Upgrader{
		// Offered but only echoed when the client asks, like the real
		// server.
		Subprotocols: []string{"protomsg/msgpack"},
		CheckOrigin:  s.checkOrigin,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, status, reason.Error())
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(AuthRequestsPath, s.handleAuthRequest)
	mux.HandleFunc(DeviceConnectPath, s.handleDeviceConnect)
	mux.HandleFunc(LoginPath, s.handleLogin)
	mux.HandleFunc(DevicesPath, s.handleListDevices)
	mux.HandleFunc(DeviceConnectMgmtDir+"{id}", s.handleDeviceStatus)
	mux.HandleFunc(DeviceConnectMgmtDir+"{id}/connect", s.handleUserConnect)
	s.registerConsole(mux)
	mux.HandleFunc(DeviceConnectMgmtDir+"{id}/download", s.handleDownload)
	mux.HandleFunc(DeviceConnectMgmtDir+"{id}/upload", s.handleUpload)
	mux.HandleFunc(DeviceConnectMgmtDir+"{id}/"+CommandCheckUpdate, s.handleMenderCommand(CommandCheckUpdate))
	mux.HandleFunc(DeviceConnectMgmtDir+"{id}/"+CommandSendInventory, s.handleMenderCommand(CommandSendInventory))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found: "+r.URL.Path)
	})
	s.mux = mux
	s.handler = s.guard(mux)
	return s
}

// Handler returns the server's HTTP handler, e.g. for httptest.NewServer.
// Close still ends every websocket accepted through it.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
// It returns the base URL, "http://host:port", or "https://host:port" with
// Options.TLSConfig.
func (s *Server) Start(addr string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrServerClosed
	}
	if s.httpSrv != nil {
		return "", errors.New("mock server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("mock server listen on %s: %w", addr, err)
	}
	scheme := "http"
	if s.opts.TLSConfig != nil {
		ln = tls.NewListener(ln, serverTLSConfig(s.opts.TLSConfig))
		scheme = "https"
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("mock server stopped serving", "err", err)
		}
	}()
	s.httpSrv, s.serveDone = srv, done
	url := scheme + "://" + ln.Addr().String()
	s.log.Info("mock server listening", "url", url)
	return url, nil
}

// Close stops the listener, closes every device and user websocket and
// returns when all of the server's goroutines have ended. It is
// idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closedCh)
	srv, serveDone := s.httpSrv, s.serveDone
	conns := make([]*Device, 0, len(s.conns))
	for _, d := range s.conns {
		conns = append(conns, d)
	}
	s.mu.Unlock()

	var err error
	if srv != nil {
		// Shutdown lets plain requests in flight finish; websockets are
		// hijacked and closed below.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if serr := srv.Shutdown(ctx); serr != nil {
			err = fmt.Errorf("mock server shutdown: %w", serr)
			_ = srv.Close()
		}
		cancel()
		<-serveDone
	}
	for _, d := range conns {
		// A normal shutdown: the device should reconnect later, not
		// report a server error.
		_ = d.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
	s.closeParked()
	s.wg.Wait()
	return err
}

// beginSocket registers a websocket handler with Close; false means the
// server is closed and the handler must not start.
func (s *Server) beginSocket() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// donePendingLocked ends the upgrade of a device websocket.
func (s *Server) donePendingLocked(id string) {
	if s.pending[id]--; s.pending[id] <= 0 {
		delete(s.pending, id)
	}
	s.notifyLocked()
}

// connectedLocked reports whether a device has a websocket, counting one
// whose 101 is on its way.
func (s *Server) connectedLocked(id string) bool {
	return s.conns[id] != nil || s.pending[id] > 0
}

// liveDevice returns the device's connection, waiting for one that is being
// upgraded; known is false for a device the server never heard of.
func (s *Server) liveDevice(ctx context.Context, id string) (d *Device, known bool) {
	for {
		s.mu.Lock()
		_, known = s.devices[id]
		d = s.conns[id]
		pending := s.pending[id] > 0
		ch := s.changed
		s.mu.Unlock()
		if d != nil || !pending {
			return d, known
		}
		select {
		case <-ch:
		case <-s.closedCh:
			return nil, known
		case <-ctx.Done():
			return nil, known
		}
	}
}

// notifyLocked wakes every waiter; s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// IssueDeviceToken returns a device JWT for deviceID, as a successful
// authentication request would, and makes the device known.
func (s *Server) IssueDeviceToken(deviceID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rememberDeviceLocked(deviceID, "", "")
	return s.issueLocked(deviceID, true)
}

// issueLocked signs a token; s.mu must be held.
func (s *Server) issueLocked(subject string, device bool) string {
	now := time.Now()
	c := claims{
		Subject:   subject,
		Issuer:    tokenIssuer,
		IssuedAt:  now.Unix(),
		ExpiresAt: now.Add(s.opts.TokenLifetime).Unix(),
		ID:        randomUUID(),
		Device:    device,
		User:      !device,
	}
	tok, err := signToken(s.key, c)
	if err != nil {
		// Marshalling a struct of strings and numbers cannot fail.
		panic(err)
	}
	if device {
		s.pruneIssuedLocked(now)
		s.issued[c.ID] = now
	}
	return tok
}

// pruneIssuedLocked bounds the issue-time table by forgetting tokens that
// have expired anyway.
func (s *Server) pruneIssuedLocked(now time.Time) {
	if len(s.issued) < 4096 {
		return
	}
	for jti, t := range s.issued {
		if now.Sub(t) > s.opts.TokenLifetime {
			delete(s.issued, jti)
		}
	}
}

// RevokeDeviceTokens makes every token issued to deviceID until now fail
// with 401 on the device endpoint. A live connection is left alone; drop it
// with Device.Close to make the device reconnect.
func (s *Server) RevokeDeviceTokens(deviceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[deviceID] = time.Now()
}

// revokedLocked reports whether a device token was revoked. Tokens of this
// instance are compared with their exact issue time; older ones (from a
// previous run with the same key) only carry iat in seconds.
func (s *Server) revokedLocked(c claims) bool {
	cut, ok := s.revoked[c.Subject]
	if !ok {
		return false
	}
	if t, known := s.issued[c.ID]; known {
		return !t.After(cut)
	}
	return c.IssuedAt <= cut.Unix()
}

// rememberDeviceLocked records a device; idData/pubKey update an existing
// record when given. s.mu must be held.
func (s *Server) rememberDeviceLocked(id, idData, pubKey string) {
	now := time.Now()
	rec, ok := s.devices[id]
	if !ok {
		rec = &deviceRecord{id: id, created: now}
		s.devices[id] = rec
	}
	rec.updated = now
	if idData != "" {
		rec.idData = idData
	}
	if pubKey != "" {
		rec.pubKey = pubKey
	}
}

// deviceList lists every known device, sorted by id.
func (s *Server) deviceList() []DeviceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceInfo, 0, len(s.devices))
	for id, rec := range s.devices {
		connected := s.connectedLocked(id)
		out = append(out, DeviceInfo{
			ID:           id,
			Status:       "accepted",
			Connected:    connected,
			IdentityData: rec.idData,
			Connects:     s.connects[id],
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DeviceConnects counts the device websockets accepted so far for
// deviceID.
func (s *Server) DeviceConnects(deviceID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connects[deviceID]
}

// Tap returns every frame that decodes from every connection of the
// device from its next connection on (the current one too, if it is up),
// in order: a test can follow a session across reconnects without missing
// what a new connection sends first. Overflow closes it, as Subscribe.
func (s *Server) Tap(deviceID string) (frames <-chan *wire.ProtoMsg, cancel func()) {
	sub := &subscription{ch: make(chan *wire.ProtoMsg, SubscriptionBuffer), tap: true}
	s.mu.Lock()
	if s.taps == nil {
		s.taps = make(map[string][]*subscription)
	}
	s.taps[deviceID] = append(s.taps[deviceID], sub)
	d := s.conns[deviceID]
	s.mu.Unlock()
	if d != nil {
		d.mu.Lock()
		if !d.closed {
			d.subs[sub] = struct{}{}
		}
		d.mu.Unlock()
	}
	return sub.ch, func() {
		s.mu.Lock()
		taps := s.taps[deviceID]
		for i, t := range taps {
			if t == sub {
				s.taps[deviceID] = append(taps[:i], taps[i+1:]...)
				break
			}
		}
		d := s.conns[deviceID]
		s.mu.Unlock()
		if d != nil {
			d.mu.Lock()
			delete(d.subs, sub)
			d.mu.Unlock()
		}
		sub.close()
	}
}

// WaitDevice waits until deviceID ("" = any device) has a live websocket
// and returns that connection.
func (s *Server) WaitDevice(ctx context.Context, deviceID string) (*Device, error) {
	return s.waitConn(ctx, deviceID, nil)
}

// WaitReconnect waits for a connection of old's device other than old,
// i.e. the device's next connection.
func (s *Server) WaitReconnect(ctx context.Context, old *Device) (*Device, error) {
	return s.waitConn(ctx, old.ID(), old)
}

func (s *Server) waitConn(ctx context.Context, deviceID string, not *Device) (*Device, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrServerClosed
		}
		d := s.pickLocked(deviceID)
		ch := s.changed
		s.mu.Unlock()
		if d != nil && d != not {
			return d, nil
		}
		select {
		case <-ch:
		case <-s.closedCh:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for device %q to connect: %w", deviceID, ctx.Err())
		}
	}
}

// pickLocked returns the live connection of deviceID, or for "" the one of
// the smallest id.
func (s *Server) pickLocked(deviceID string) *Device {
	if deviceID != "" {
		return s.conns[deviceID]
	}
	var best *Device
	for id, d := range s.conns {
		if best == nil || id < best.id {
			best = d
		}
	}
	return best
}

// bearerToken takes the JWT from "Authorization: Bearer" (scheme matched
// case-insensitively) or, without that header, from the JWT cookie.
func bearerToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
			return "", errors.New("malformed Authorization header")
		}
		return strings.TrimSpace(tok), nil
	}
	if c, err := r.Cookie("JWT"); err == nil && c.Value != "" {
		return c.Value, nil
	}
	return "", errors.New("missing authorization")
}

// authenticate verifies the request's token; it writes the 401 itself.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (claims, bool) {
	tok, err := bearerToken(r)
	if err == nil {
		var c claims
		c, err = verifyToken(s.key, tok, time.Now())
		if err == nil && c.User && s.isLoggedOut(c.ID) {
			err = errors.New("token ended by logout")
		}
		if err == nil {
			return c, true
		}
		s.log.Info("rejected token", "path", r.URL.Path, "token_sha256", tokenFingerprint(tok), "err", err)
	}
	writeError(w, http.StatusUnauthorized, "Unauthorized: "+err.Error())
	return claims{}, false
}

// authenticateUser additionally requires a user token; the real gateway
// verifies management calls with useradm, which rejects device tokens.
func (s *Server) authenticateUser(w http.ResponseWriter, r *http.Request) (claims, bool) {
	c, ok := s.authenticate(w, r)
	if !ok {
		return c, false
	}
	if !c.User {
		writeError(w, http.StatusUnauthorized, "Unauthorized: not a user token")
		return c, false
	}
	return c, true
}

func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
	return false
}

// writeError answers like the Mender services: {"error": "..."}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
