package mockserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

// SubscriptionBuffer is how many frames a Subscribe channel holds.
const SubscriptionBuffer = 4096

// DefaultDeviceFrameLimit is NATS's default payload limit, which every
// device frame crosses in the real server (PROTOCOL.md 2.9.1).
const DefaultDeviceFrameLimit = 1 << 20

// Close texts of the device link drop as the user sees it.
const closeLinkLostText = "internal error"

// Device is one live device websocket connection.
type Device struct {
	s     *Server
	id    string
	token string
	conn  *websocket.Conn
	log   *slog.Logger

	writeMu   sync.Mutex
	pingReset chan struct{}
	malformed atomic.Int64
	closeOnce sync.Once
	done      chan struct{}

	mu       sync.Mutex
	closed   bool
	subs     map[*subscription]struct{}
	sessions map[string]*userSession
	// peers are the server's own sessions with the device (file
	// transfer REST calls), by sid.
	peers map[string]*ftPeer
}

type subscription struct {
	ch   chan *wire.ProtoMsg
	tap  bool // spans the device's connections (Server.Tap)
	once sync.Once
}

func (sub *subscription) close() { sub.once.Do(func() { close(sub.ch) }) }

// ID is the device id (the token's sub claim).
func (d *Device) ID() string { return d.id }

// Token is the bearer token the device connected with.
func (d *Device) Token() string { return d.token }

// Done is closed when the connection has ended and been cleaned up.
func (d *Device) Done() <-chan struct{} { return d.done }

// malformedCount counts frames from the device that did not decode.
func (d *Device) malformedCount() int { return int(d.malformed.Load()) }

// Send writes one message to the device.
func (d *Device) Send(m *wire.ProtoMsg) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	return d.write(websocket.BinaryMessage, b)
}

// SendRaw writes any frame (websocket.TextMessage or BinaryMessage) to the
// device, for tests with garbage input.
func (d *Device) SendRaw(messageType int, data []byte) error {
	return d.write(messageType, data)
}

func (d *Device) write(messageType int, data []byte) error {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if err := d.conn.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return fmt.Errorf("device %s: %w", d.id, err)
	}
	if err := d.conn.WriteMessage(messageType, data); err != nil {
		return fmt.Errorf("write to device %s: %w", d.id, err)
	}
	// Like the real server, traffic to the device postpones the next ping.
	select {
	case d.pingReset <- struct{}{}:
	default:
	}
	return nil
}

// Subscribe returns every frame the device sends from now on that decodes,
// whether or not a user session receives it. The messages are shared: treat
// them as read-only. The channel holds SubscriptionBuffer frames; a
// subscriber that falls that far behind is cut off (its channel is closed
// and a warning logged) rather than stalling the relay, so a test sees a
// gap as an early end, never as silently missing frames. The channel is
// also closed when the connection ends or cancel is called.
func (d *Device) Subscribe() (frames <-chan *wire.ProtoMsg, cancel func()) {
	sub := &subscription{ch: make(chan *wire.ProtoMsg, SubscriptionBuffer)}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		close(sub.ch)
		return sub.ch, func() {}
	}
	d.subs[sub] = struct{}{}
	return sub.ch, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, ok := d.subs[sub]; ok {
			delete(d.subs, sub)
			sub.close()
		}
	}
}

// Close drops the connection from the server side (close frame 1011, as
// deviceconnect sends when it drops a device) and waits until it is
// cleaned up. Server.Close says 1001 (going away) instead.
func (d *Device) Close() error {
	return d.closeWith(websocket.CloseInternalServerErr, "connection closed by the server")
}

// drop closes the connection without a close frame, as the real server
// does to a device connection that a newer one of the same device
// replaces (the device reads 1006).
func (d *Device) drop() {
	d.closeOnce.Do(func() { _ = d.conn.Close() })
	<-d.done
}

func (d *Device) closeWith(code int, text string) error {
	d.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(code, text)
		_ = d.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeTimeout))
		_ = d.conn.Close()
	})
	<-d.done
	return nil
}

func (s *Server) handleDeviceConnect(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	at := time.Now()
	c, ok := s.authenticate(w, r)
	if !ok {
		s.connectEvent(at, "", http.StatusUnauthorized)
		return
	}
	if !c.Device || c.Subject == "" {
		writeError(w, http.StatusBadRequest, "missing or non-device identity in the authorization headers")
		s.connectEvent(at, "", http.StatusBadRequest)
		return
	}
	tok, _ := bearerToken(r)
	s.mu.Lock()
	revoked := s.revokedLocked(c)
	s.mu.Unlock()
	if revoked {
		s.log.Info("device token revoked", "device_id", c.Subject, "token_sha256", tokenFingerprint(tok))
		writeError(w, http.StatusUnauthorized, "Unauthorized: token revoked")
		s.connectEvent(at, c.Subject, http.StatusUnauthorized)
		return
	}
	// After the token check, as the real server's gateway checks it
	// before deviceconnect sees the request.
	if !s.limit.take(at) {
		s.refuseStartingUp(w)
		s.connectEvent(at, c.Subject, http.StatusServiceUnavailable)
		return
	}
	if !s.beginSocket() {
		writeError(w, http.StatusServiceUnavailable, "server shutting down")
		s.connectEvent(at, c.Subject, http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()

	// Counted, known and "connected" before the 101 goes out, so that a
	// client that sees its connection accepted sees the server agree.
	s.mu.Lock()
	s.connects[c.Subject]++
	n := s.connects[c.Subject]
	s.pending[c.Subject]++
	s.rememberDeviceLocked(c.Subject, "", "")
	s.mu.Unlock()
	// Reported before the 101 goes out, so that a client's next request
	// is never reported ahead of this one. A request that is no upgrade
	// at all is reported with the 400 the upgrader answers it.
	upgrading := websocket.IsWebSocketUpgrade(r)
	if upgrading {
		s.connectEvent(at, c.Subject, http.StatusSwitchingProtocols)
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.mu.Lock()
		s.connects[c.Subject]--
		s.donePendingLocked(c.Subject)
		s.mu.Unlock()
		if !upgrading {
			s.connectEvent(at, c.Subject, http.StatusBadRequest)
		}
		s.log.Info("device websocket upgrade failed", "device_id", c.Subject, "err", err)
		return
	}
	conn.SetReadLimit(MessageSizeLimit)
	d := &Device{
		s:         s,
		id:        c.Subject,
		token:     tok,
		conn:      conn,
		log:       s.log.With("device_id", c.Subject),
		pingReset: make(chan struct{}, 1),
		done:      make(chan struct{}),
		subs:      make(map[*subscription]struct{}),
		sessions:  make(map[string]*userSession),
	}

	s.mu.Lock()
	s.donePendingLocked(d.id)
	if s.closed {
		s.mu.Unlock()
		_ = conn.Close()
		return
	}
	old := s.conns[d.id]
	s.conns[d.id] = d
	for _, sub := range s.taps[d.id] {
		d.subs[sub] = struct{}{}
	}
	s.adoptParkedLocked(d)
	s.notifyLocked()
	s.mu.Unlock()
	if old != nil {
		// One websocket per device: the newest wins, like the real
		// server's connection version check, which just drops the old
		// socket (no close frame).
		d.log.Info("device reconnected; closing its previous connection")
		if s.opts.Lenient {
			_ = old.Close()
		} else {
			old.drop()
		}
	}
	d.log.Info("device connected", "connection", n, "token_sha256", tokenFingerprint(tok))
	d.serve()
}

// serve runs the read loop until the connection ends, then tears down.
func (d *Device) serve() {
	pingerDone := make(chan struct{})
	stopPinger := make(chan struct{})
	go func() {
		defer close(pingerDone)
		d.pinger(stopPinger)
	}()

	err := d.readLoop()
	d.log.Info("device disconnected", "reason", err)

	d.mu.Lock()
	d.closed = true
	sessions := d.sessions
	d.sessions = nil
	for sub := range d.subs {
		if !sub.tap {
			sub.close()
		}
	}
	d.subs = nil
	d.mu.Unlock()

	_ = d.conn.Close()
	close(stopPinger)
	<-pingerDone
	d.s.releaseSessions(d, sessions)

	d.s.mu.Lock()
	if d.s.conns[d.id] == d {
		delete(d.s.conns, d.id)
		if rec := d.s.devices[d.id]; rec != nil {
			rec.left = time.Now()
		}
	}
	d.s.notifyLocked()
	d.s.mu.Unlock()
	close(d.done)
}

func (d *Device) readLoop() error {
	timeout := d.s.opts.ReadTimeout
	refresh := func() error { return d.conn.SetReadDeadline(time.Now().Add(timeout)) }
	d.conn.SetPingHandler(func(payload string) error {
		d.resetPing()
		if err := refresh(); err != nil {
			return err
		}
		err := d.conn.WriteControl(websocket.PongMessage, []byte(payload), time.Now().Add(writeWait))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			return err
		}
		return nil
	})
	d.conn.SetPongHandler(func(string) error {
		d.resetPing()
		return refresh()
	})
	for {
		if err := refresh(); err != nil {
			return err
		}
		_, data, err := d.conn.ReadMessage()
		if err != nil {
			return err
		}
		if limit := d.s.opts.DeviceFrameLimit; limit >= 0 && len(data) > limit {
			// The real server publishes every device frame on NATS; one
			// above the payload limit fails there and ends the link.
			msg := websocket.FormatCloseMessage(websocket.CloseInternalServerErr, closeLinkLostText)
			_ = d.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeTimeout))
			return fmt.Errorf("device frame of %d bytes exceeds the NATS payload limit of %d bytes", len(data), limit)
		}
		m, err := wire.Unmarshal(data)
		if err != nil {
			d.malformed.Add(1)
			d.log.Warn("malformed frame from device", "len", len(data), "err", err)
			if d.s.opts.Strict {
				return fmt.Errorf("strict mode: %w", err)
			}
			continue
		}
		if d.s.opts.Strict && m.Header.Proto == wire.ProtoShell && m.Header.SessionID == "" {
			return errors.New("api: message missing required session ID")
		}
		d.route(m)
		d.publish(m)
	}
}

func (d *Device) resetPing() {
	select {
	case d.pingReset <- struct{}{}:
	default:
	}
}

// pinger sends websocket pings every DevicePingInterval of write silence.
func (d *Device) pinger(stop <-chan struct{}) {
	interval := d.s.opts.DevicePingInterval
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-d.pingReset:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			t.Reset(interval)
		case <-t.C:
			err := d.conn.WriteControl(websocket.PingMessage, []byte(pingPayload), time.Now().Add(writeWait))
			if err != nil {
				d.log.Info("ping to device failed; closing", "err", err)
				_ = d.conn.Close()
				return
			}
			t.Reset(interval)
		}
	}
}

// route hands a device message to the user connection owning its sid; a
// message for no live session is dropped, as the real server does.
func (d *Device) route(m *wire.ProtoMsg) {
	d.mu.Lock()
	us := d.sessions[m.Header.SessionID]
	peer := d.peers[m.Header.SessionID]
	d.mu.Unlock()
	if peer != nil {
		peer.deliver(m)
		return
	}
	if us == nil {
		d.log.Debug("dropping device message without a live user session",
			"sid", m.Header.SessionID, "proto", wire.ProtoName(m.Header.Proto), "typ", m.Header.MsgType)
		return
	}
	us.fromDevice(m)
}

// publish copies m to every subscriber without blocking.
func (d *Device) publish(m *wire.ProtoMsg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for sub := range d.subs {
		select {
		case sub.ch <- m:
		default:
			d.log.Warn("subscriber fell behind; closing its channel", "buffer", SubscriptionBuffer)
			delete(d.subs, sub)
			sub.close()
		}
	}
}

// addSession registers a user connection; false if the device is gone.
func (d *Device) addSession(us *userSession) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.sessions[us.sid] = us
	return true
}

func (d *Device) removeSession(us *userSession) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sessions[us.sid] == us {
		delete(d.sessions, us.sid)
	}
}

// adopt binds a user session to this connection (Lenient); false if the
// connection has ended.
func (d *Device) adopt(us *userSession) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.sessions[us.sid] = us
	us.dev.Store(d)
	return true
}

// releaseSessions ends the user sessions of a connection that went down.
// The real server closes each user socket with 1011 and tells nobody
// anything else (PROTOCOL.md 2.9.1). A Lenient server keeps them for the
// device's next connection (for ReadTimeout); at shutdown users get a stop
// "device disconnected" and 1001.
func (s *Server) releaseSessions(d *Device, sessions map[string]*userSession) {
	if len(sessions) == 0 {
		return
	}
	s.mu.Lock()
	closed := s.closed
	if !closed && s.opts.Lenient {
		cur := s.conns[d.id]
		for _, us := range sessions {
			us.dev.Store(nil)
			if us.ended {
				continue
			}
			if cur != nil && cur != d && cur.adopt(us) {
				us.log.Info("user session moved to the device's new connection (lenient)")
				continue
			}
			s.parkLocked(d.id, us)
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	for _, us := range sessions {
		if closed {
			us.deviceGone()
		} else {
			us.linkLost()
		}
	}
}

// parkLocked keeps a user session of a dropped device until the device's
// next connection adopts it or ReadTimeout passes; s.mu must be held.
func (s *Server) parkLocked(id string, us *userSession) {
	if s.parked == nil {
		s.parked = make(map[string]map[*userSession]*time.Timer)
	}
	if s.parked[id] == nil {
		s.parked[id] = make(map[*userSession]*time.Timer)
	}
	s.parked[id][us] = time.AfterFunc(s.opts.ReadTimeout, func() { s.expireParked(id, us) })
	us.log.Info("device link lost; user session kept for the device's next connection (lenient)")
}

func (s *Server) expireParked(id string, us *userSession) {
	s.mu.Lock()
	_, ok := s.parked[id][us]
	s.unparkLocked(id, us)
	s.mu.Unlock()
	if ok {
		us.deviceGone()
	}
}

// unparkLocked forgets a parked session; s.mu must be held.
func (s *Server) unparkLocked(id string, us *userSession) {
	set := s.parked[id]
	if tm, ok := set[us]; ok {
		tm.Stop()
		delete(set, us)
	}
	if len(set) == 0 {
		delete(s.parked, id)
	}
}

// adoptParkedLocked hands the parked user sessions of d's device to d;
// s.mu must be held.
func (s *Server) adoptParkedLocked(d *Device) {
	for us := range s.parked[d.id] {
		s.unparkLocked(d.id, us)
		if d.adopt(us) {
			us.log.Info("user session moved to the device's new connection (lenient)")
		}
	}
}

// closeParked ends every parked session at shutdown.
func (s *Server) closeParked() {
	s.mu.Lock()
	var all []*userSession
	for id, set := range s.parked {
		for us := range set {
			all = append(all, us)
			s.unparkLocked(id, us)
		}
	}
	s.mu.Unlock()
	for _, us := range all {
		us.deviceGone()
	}
}

// removeUser forgets a user session that ended.
func (s *Server) removeUser(us *userSession) {
	s.mu.Lock()
	us.ended = true
	s.unparkLocked(us.deviceID, us)
	d := us.dev.Load()
	s.mu.Unlock()
	if d != nil {
		d.removeSession(us)
	}
}

// linkLost ends a user session whose device link went down, as the real
// server does: close 1011, no stop either way.
func (us *userSession) linkLost() {
	us.deviceLeft.Store(true)
	us.log.Info("device link lost; closing the user session")
	us.closeWith(websocket.CloseInternalServerErr, closeLinkLostText)
}
