package mockserver

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

// Texts the server puts in the stop messages it generates (docs/protocol.md §8.1).
const (
	StopUserDisconnected   = "user disconnected"
	StopDeviceDisconnected = "device disconnected"
	StopByteLimit          = "session byte limit exceeded"
	// CloseByteLimitText is the reason of the 1008 close frame the user
	// gets when the byte limit is hit.
	CloseByteLimitText = "session byte limit exhausted"
)

// UserID is the id the server gives the user with this e-mail; stable
// across restarts.
func UserID(email string) string { return derivedUUID("user:" + email) }

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	email, password, ok := r.BasicAuth()
	if !ok {
		writeError(w, http.StatusUnauthorized, "Unauthorized: missing basic auth")
		return
	}
	want, known := s.users[email]
	if !known || subtle.ConstantTimeCompare([]byte(password), []byte(want)) != 1 {
		s.log.Info("login failed", "email", email)
		writeError(w, http.StatusUnauthorized, "Unauthorized: wrong e-mail or password")
		return
	}
	s.mu.Lock()
	tok := s.issueLocked(UserID(email), false)
	s.mu.Unlock()
	s.log.Info("user logged in", "email", email, "token_sha256", tokenFingerprint(tok))
	s.setJWTCookie(w, r, tok)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, tok)
}

// apiDevice is an element of the devauth device list.
type apiDevice struct {
	ID           string                 `json:"id"`
	Status       string                 `json:"status"`
	IdentityData map[string]interface{} `json:"identity_data,omitempty"`
	CreatedTS    time.Time              `json:"created_ts"`
	UpdatedTS    time.Time              `json:"updated_ts"`
}

func (s *Server) handleListDevices(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	if _, ok := s.authenticateUser(w, r); !ok {
		return
	}
	page, err := queryInt(r, "page", 1, 1, 1<<30)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	perPage, err := queryInt(r, "per_page", 20, 1, 500)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	list := make([]apiDevice, 0, len(s.devices))
	for _, rec := range s.devices {
		dev := apiDevice{ID: rec.id, Status: "accepted", CreatedTS: rec.created.UTC(), UpdatedTS: rec.updated.UTC()}
		if rec.idData != "" {
			_ = json.Unmarshal([]byte(rec.idData), &dev.IdentityData)
		}
		list = append(list, dev)
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	start := (page - 1) * perPage
	if start > len(list) {
		start = len(list)
	}
	end := start + perPage
	if end > len(list) {
		end = len(list)
	}
	writeJSON(w, http.StatusOK, list[start:end])
}

func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("invalid %s: %q", name, v)
	}
	return n, nil
}

func (s *Server) handleDeviceStatus(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	if _, ok := s.authenticateUser(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	rec, known := s.devices[id]
	connected := s.connectedLocked(id)
	var updated time.Time
	if known {
		updated = rec.updated
		if rec.left.After(updated) {
			updated = rec.left
		}
	}
	s.mu.Unlock()
	if !known {
		writeError(w, http.StatusNotFound, "device not found")
		return
	}
	status := "disconnected"
	if connected {
		status = "connected"
	}
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"device_id":  id,
		"status":     status,
		"updated_ts": updated.UTC(),
	})
}

// userSession is one management websocket relayed to a device connection.
type userSession struct {
	server   *Server
	sid      string
	userID   string
	deviceID string
	// dev is the device connection the session is relayed to; nil while
	// a Lenient server waits for the device's next connection.
	dev  atomic.Pointer[Device]
	conn *websocket.Conn
	log  *slog.Logger
	// ended is set (under Server.mu) when the user socket is done.
	ended bool

	writeMu   sync.Mutex
	closeOnce sync.Once

	// terminalRunning follows the user's shell new/stop and decides
	// whether the device gets "user disconnected" (like the real server).
	terminalRunning atomic.Bool
	// deviceTerminal follows the device's shell new/stop and decides
	// whether the user gets "device disconnected".
	deviceTerminal atomic.Bool
	deviceLeft     atomic.Bool

	// Only the device's read loop touches these.
	recorded int64
	limitHit bool
}

func (s *Server) handleUserConnect(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	c, ok := s.authenticateUser(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	dev, known := s.liveDevice(r.Context(), id)
	switch {
	case !known:
		writeError(w, http.StatusNotFound, "device not found")
		return
	case dev == nil:
		writeError(w, http.StatusConflict, "failed to connect to device: device disconnected")
		return
	}
	if !s.beginSocket() {
		writeError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	}
	defer s.wg.Done()
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Info("user websocket upgrade failed", "device_id", id, "err", err)
		return
	}
	conn.SetReadLimit(MessageSizeLimit)
	us := &userSession{server: s, sid: randomUUID(), userID: c.Subject, deviceID: id, conn: conn}
	us.dev.Store(dev)
	us.log = dev.log.With("sid", us.sid, "user_id", us.userID)
	if !dev.addSession(us) {
		// The device went down during the upgrade: as if it went
		// down just after.
		s.releaseSessions(dev, map[string]*userSession{us.sid: us})
	}
	us.log.Info("user session opened")
	us.serve(s.opts)
}

func (us *userSession) serve(opts Options) {
	stopPinger := make(chan struct{})
	pingerDone := make(chan struct{})
	go func() {
		defer close(pingerDone)
		us.pinger(opts.UserPingInterval, stopPinger)
	}()

	err := us.readLoop(opts.ReadTimeout)
	us.log.Info("user session ended", "reason", err)

	s := us.server
	s.removeUser(us)
	// The real server closes its stream before it tries to send "user
	// disconnected", so the device hears nothing (PROTOCOL.md 2.9.1).
	if d := us.dev.Load(); s.opts.Lenient && d != nil && us.terminalRunning.Load() && !us.deviceLeft.Load() {
		stop := us.stopMessage(StopUserDisconnected)
		if err := d.Send(stop); err != nil {
			us.log.Info("could not tell the device that the user left", "err", err)
		}
	}
	us.closeWith(websocket.CloseNormalClosure, "")
	close(stopPinger)
	<-pingerDone
}

// readLoop relays user messages to the device: the sid is replaced by the
// connection's and user_id is added. An undecodable message ends the
// session, as in the real server (whose strict decoder fails on it).
func (us *userSession) readLoop(timeout time.Duration) error {
	refresh := func() error { return us.conn.SetReadDeadline(time.Now().Add(timeout)) }
	us.conn.SetPingHandler(func(payload string) error {
		if err := refresh(); err != nil {
			return err
		}
		err := us.conn.WriteControl(websocket.PongMessage, []byte(payload), time.Now().Add(writeWait))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			return err
		}
		return nil
	})
	us.conn.SetPongHandler(func(string) error { return refresh() })
	for {
		if err := refresh(); err != nil {
			return err
		}
		_, data, err := us.conn.ReadMessage()
		if err != nil {
			return err
		}
		m, err := wire.Unmarshal(data)
		if err != nil {
			return fmt.Errorf("undecodable user message: %w", err)
		}
		m.Header.SessionID = us.sid
		if m.Header.Properties == nil {
			m.Header.Properties = make(map[string]interface{}, 1)
		}
		m.Header.Properties[wire.PropUserID] = us.userID
		if m.Header.Proto == wire.ProtoShell {
			switch m.Header.MsgType {
			case wire.ShellNew:
				us.terminalRunning.Store(true)
			case wire.ShellStop:
				us.terminalRunning.Store(false)
			}
		}
		d := us.dev.Load()
		if d == nil {
			us.log.Debug("device link down; dropping user message (lenient)", "typ", m.Header.MsgType)
			continue
		}
		if err := d.Send(m); err != nil {
			if us.server.opts.Lenient {
				us.log.Debug("device link down; dropping user message (lenient)", "typ", m.Header.MsgType, "err", err)
				continue
			}
			return err
		}
	}
}

func (us *userSession) pinger(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			err := us.conn.WriteControl(websocket.PingMessage, []byte(pingPayload), time.Now().Add(writeWait))
			if err != nil {
				_ = us.conn.Close()
				return
			}
		}
	}
}

// fromDevice runs on the device's read loop. It applies the session byte
// limit the way the real server does: a shell output message arriving when
// the recorded total has already reached the limit is not forwarded; the
// device gets a stop and the user a 1008 close.
func (us *userSession) fromDevice(m *wire.ProtoMsg) {
	if us.limitHit {
		return
	}
	if m.Header.Proto == wire.ProtoShell {
		switch m.Header.MsgType {
		case wire.ShellNew:
			us.deviceTerminal.Store(true)
		case wire.ShellStop:
			us.deviceTerminal.Store(false)
		case wire.ShellData:
			limit := us.server.opts.SessionByteLimit
			if limit >= 0 && us.recorded >= limit {
				us.byteLimitExceeded()
				return
			}
			us.recorded += int64(len(m.Body))
		}
	}
	b, err := wire.Marshal(m)
	if err != nil {
		us.log.Warn("cannot re-encode device message", "err", err)
		return
	}
	if err := us.write(b); err != nil {
		us.log.Info("write to user failed; closing", "err", err)
		_ = us.conn.Close()
	}
}

// stopMessage is the shell stop the server sends the device on the user's
// behalf, as the real server does.
func (us *userSession) stopMessage(reason string) *wire.ProtoMsg {
	return &wire.ProtoMsg{
		Header: wire.Header{
			Proto:     wire.ProtoShell,
			MsgType:   wire.ShellStop,
			SessionID: us.sid,
			Properties: map[string]interface{}{
				wire.PropStatus: wire.StatusError,
				wire.PropUserID: us.userID,
			},
		},
		Body: []byte(reason),
	}
}

func (us *userSession) byteLimitExceeded() {
	us.limitHit = true
	us.log.Info("session byte limit exceeded", "recorded", us.recorded)
	stop := us.stopMessage(StopByteLimit)
	if err := us.dev.Load().Send(stop); err != nil {
		us.log.Info("could not send the byte-limit stop", "err", err)
	}
	us.closeWith(websocket.ClosePolicyViolation, CloseByteLimitText)
}

// deviceGone is called when the device connection ended: a user with a
// running terminal is told so, then the user socket is closed.
func (us *userSession) deviceGone() {
	us.deviceLeft.Store(true)
	if us.deviceTerminal.Load() {
		stop := &wire.ProtoMsg{
			Header: wire.Header{
				Proto:      wire.ProtoShell,
				MsgType:    wire.ShellStop,
				SessionID:  us.sid,
				Properties: map[string]interface{}{wire.PropStatus: wire.StatusError},
			},
			Body: []byte(StopDeviceDisconnected),
		}
		if b, err := wire.Marshal(stop); err == nil {
			_ = us.write(b)
		}
	}
	us.closeWith(websocket.CloseGoingAway, StopDeviceDisconnected)
}

func (us *userSession) write(b []byte) error {
	us.writeMu.Lock()
	defer us.writeMu.Unlock()
	if err := us.conn.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return err
	}
	return us.conn.WriteMessage(websocket.BinaryMessage, b)
}

// closeWith sends a close frame (best effort) and closes the socket once.
func (us *userSession) closeWith(code int, text string) {
	us.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(code, text)
		_ = us.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeTimeout))
		_ = us.conn.Close()
	})
}
