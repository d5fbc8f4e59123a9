package mockserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/wire"
)

// DefaultMessageBuffer is how many device messages a Terminal queues for
// its reader before it stops reading the socket (back-pressure: the server
// then blocks on its write to this user for up to 10 s and then drops it).
const DefaultMessageBuffer = 4096

// ErrTerminalClosed ends a Terminal that was closed by its owner.
var ErrTerminalClosed = errors.New("terminal closed")

// ShellError is a shell `new` refused by the device (status 2). Error()
// is the device's text exactly, e.g. "user has too many open sessions".
type ShellError struct {
	Message string
}

func (e *ShellError) Error() string { return e.Message }

// StoppedError reports that the device stopped the shell while a Terminal
// helper was waiting for something else.
type StoppedError struct {
	Stop *wire.ProtoMsg
}

func (e *StoppedError) Error() string {
	st, _ := e.Stop.Header.IntProp(wire.PropStatus)
	return fmt.Sprintf("shell stopped by the device (status %d): %q", st, e.Stop.Body)
}

// TerminalOption tunes Dial and OpenTerminal.
type TerminalOption func(*terminalConfig)

type terminalConfig struct {
	autoPong bool
	buffer   int
}

// WithoutAutoPong stops the Terminal from answering the device's shell
// pings, to test the device's health check.
func WithoutAutoPong() TerminalOption {
	return func(c *terminalConfig) { c.autoPong = false }
}

// Terminal is the user side of a management websocket: what the web UI or
// mender-cli does. Write/Resize/Stop/Send/Close are safe for concurrent
// use; the consuming side (Messages, Expect, WaitStop) is one stream and
// belongs to one goroutine at a time.
type Terminal struct {
	conn *websocket.Conn
	cfg  terminalConfig

	writeMu sync.Mutex
	sidMu   sync.Mutex
	sid     string

	msgs       chan *wire.ProtoMsg
	closing    chan struct{}
	closeOnce  sync.Once
	readerDone chan struct{}
	err        error // set by the reader before readerDone is closed

	// Owned by the consumer goroutine.
	out  []byte
	stop *wire.ProtoMsg
}

// Dial opens the management websocket to a device without starting a
// shell; the caller sends what it wants (control open, shell new...). The
// sid is learnt from the first device message that carries one.
func Dial(ctx context.Context, baseURL, userJWT, deviceID string, opts ...TerminalOption) (*Terminal, error) {
	cfg := terminalConfig{autoPong: true, buffer: DefaultMessageBuffer}
	for _, o := range opts {
		o(&cfg)
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", baseURL, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	u.Path += DeviceConnectMgmtDir + url.PathEscape(deviceID) + "/connect"
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+userJWT)
	dialer := &websocket.Dialer{HandshakeTimeout: 45 * time.Second}
	conn, resp, err := dialer.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("connect to device %s: %w", deviceID, newHTTPError(resp))
		}
		return nil, fmt.Errorf("connect to device %s: %w", deviceID, err)
	}
	conn.SetReadLimit(MessageSizeLimit)
	t := &Terminal{
		conn:       conn,
		cfg:        cfg,
		msgs:       make(chan *wire.ProtoMsg, cfg.buffer),
		closing:    make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	go t.read()
	return t, nil
}

// OpenTerminal dials the device and starts a shell like mender-cli: shell
// `new` with terminal_width/height and no sid, then it waits for the
// device's `new`. Status 1 gives a ready Terminal (sid learnt from the
// reply); status 2 gives a *ShellError with the device's text. Messages
// that arrive before the reply are discarded.
func OpenTerminal(ctx context.Context, baseURL, userJWT, deviceID string, cols, rows uint16, opts ...TerminalOption) (*Terminal, error) {
	t, err := Dial(ctx, baseURL, userJWT, deviceID, opts...)
	if err != nil {
		return nil, err
	}
	err = t.Send(&wire.ProtoMsg{Header: wire.Header{
		Proto:   wire.ProtoShell,
		MsgType: wire.ShellNew,
		Properties: map[string]interface{}{
			wire.PropTerminalWidth:  int(cols),
			wire.PropTerminalHeight: int(rows),
		},
	}})
	if err != nil {
		_ = t.Close()
		return nil, err
	}
	for {
		select {
		case m, ok := <-t.msgs:
			if !ok {
				err := t.Err()
				_ = t.Close()
				return nil, fmt.Errorf("device %s: connection ended before the shell started: %w", deviceID, err)
			}
			if m.Header.Proto != wire.ProtoShell || m.Header.MsgType != wire.ShellNew {
				continue
			}
			// Read the status as mender-cli does (cmd/terminal.go): a
			// strict int64 assertion, where any other width counts as
			// success. A device must write it as int64 to be understood.
			if st, ok := m.Header.Properties[wire.PropStatus].(int64); ok && st == wire.StatusError {
				_ = t.Close()
				return nil, &ShellError{Message: string(m.Body)}
			}
			t.setSID(m.Header.SessionID)
			return t, nil
		case <-ctx.Done():
			_ = t.Close()
			return nil, fmt.Errorf("device %s: waiting for the shell to start: %w", deviceID, ctx.Err())
		}
	}
}

func (t *Terminal) read() {
	// readerDone first, so that Err is set once Messages is closed.
	defer close(t.msgs)
	defer close(t.readerDone)
	for {
		_, data, err := t.conn.ReadMessage()
		if err != nil {
			select {
			case <-t.closing:
				t.err = ErrTerminalClosed
			default:
				t.err = err
			}
			return
		}
		m, err := wire.Unmarshal(data)
		if err != nil {
			continue // undecodable frames from the server are skipped
		}
		if m.Header.SessionID != "" {
			t.setSID(m.Header.SessionID)
		}
		if t.cfg.autoPong && m.Header.Proto == wire.ProtoShell && m.Header.MsgType == wire.ShellPing {
			_ = t.Send(&wire.ProtoMsg{Header: wire.Header{
				Proto: wire.ProtoShell, MsgType: wire.ShellPong, SessionID: m.Header.SessionID,
			}})
		}
		select {
		case t.msgs <- m:
		case <-t.closing:
			t.err = ErrTerminalClosed
			return
		}
	}
}

func (t *Terminal) setSID(sid string) {
	t.sidMu.Lock()
	defer t.sidMu.Unlock()
	if t.sid == "" {
		t.sid = sid
	}
}

// SID is the session id the server assigned ("" until a device message
// carried it).
func (t *Terminal) SID() string {
	t.sidMu.Lock()
	defer t.sidMu.Unlock()
	return t.sid
}

// Messages delivers every message from the device in order (after the
// `new` reply for OpenTerminal); it is closed when the socket ends.
func (t *Terminal) Messages() <-chan *wire.ProtoMsg { return t.msgs }

// Err is why the socket ended (a *websocket.CloseError carries the
// server's close code), ErrTerminalClosed after Close, nil while open.
func (t *Terminal) Err() error {
	select {
	case <-t.readerDone:
		return t.err
	default:
		return nil
	}
}

// Send writes any message; the server sets sid and user_id.
func (t *Terminal) Send(m *wire.ProtoMsg) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if err := t.conn.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	if err := t.conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
		return fmt.Errorf("terminal write: %w", err)
	}
	return nil
}

// Write sends p as shell input.
func (t *Terminal) Write(p []byte) (int, error) {
	err := t.Send(&wire.ProtoMsg{
		Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellData, SessionID: t.SID()},
		Body:   p,
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Resize sends a shell resize.
func (t *Terminal) Resize(cols, rows uint16) error {
	return t.Send(&wire.ProtoMsg{Header: wire.Header{
		Proto:     wire.ProtoShell,
		MsgType:   wire.ShellResize,
		SessionID: t.SID(),
		Properties: map[string]interface{}{
			wire.PropTerminalWidth:  int(cols),
			wire.PropTerminalHeight: int(rows),
		},
	}})
}

// Stop asks the device to stop the shell.
func (t *Terminal) Stop() error {
	return t.Send(&wire.ProtoMsg{Header: wire.Header{
		Proto: wire.ProtoShell, MsgType: wire.ShellStop, SessionID: t.SID(),
	}})
}

// Close closes the websocket (normal closure) and waits for the reader; the
// server then sends the device "user disconnected" if a shell was started.
func (t *Terminal) Close() error {
	t.closeOnce.Do(func() {
		close(t.closing)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = t.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeTimeout))
		_ = t.conn.Close()
	})
	<-t.readerDone
	return nil
}

// Expect reads shell output until it contains substr and returns the output
// up to and including it; what follows stays buffered for the next call.
// It fails with a *StoppedError when the device stops the shell first,
// and returns the output seen so far with any error.
func (t *Terminal) Expect(ctx context.Context, substr string) (string, error) {
	for {
		if i := bytes.Index(t.out, []byte(substr)); i >= 0 {
			end := i + len(substr)
			seen := string(t.out[:end])
			t.out = append(t.out[:0], t.out[end:]...)
			return seen, nil
		}
		if t.stop != nil {
			return string(t.out), &StoppedError{Stop: t.stop}
		}
		if err := t.next(ctx); err != nil {
			return string(t.out), fmt.Errorf("waiting for %q: %w", substr, err)
		}
	}
}

// CountUntil reads shell output until it contains substr, like Expect, but
// returns only how many bytes came up to and including it: it keeps no
// more than len(substr)-1 bytes meanwhile, so a bulk transfer costs
// neither the memory nor the repeated search that Expect would spend on
// it. What follows substr stays buffered for the next call. It fails with
// a *StoppedError when the device stops the shell first, and returns the
// count so far with any error.
func (t *Terminal) CountUntil(ctx context.Context, substr string) (int64, error) {
	var n int64
	for {
		if i := bytes.Index(t.out, []byte(substr)); i >= 0 {
			end := i + len(substr)
			n += int64(end)
			t.out = append(t.out[:0], t.out[end:]...)
			return n, nil
		}
		// Only a tail shorter than substr can be the start of a match
		// that the next message completes.
		if keep := len(substr) - 1; len(t.out) > keep {
			drop := len(t.out) - keep
			n += int64(drop)
			t.out = append(t.out[:0], t.out[drop:]...)
		}
		if t.stop != nil {
			return n + int64(len(t.out)), &StoppedError{Stop: t.stop}
		}
		if err := t.next(ctx); err != nil {
			return n + int64(len(t.out)), fmt.Errorf("counting output up to %q: %w", substr, err)
		}
	}
}

// WaitStop reads until the device sends a shell stop and returns it; output
// read meanwhile stays buffered for Expect.
func (t *Terminal) WaitStop(ctx context.Context) (*wire.ProtoMsg, error) {
	for t.stop == nil {
		if err := t.next(ctx); err != nil {
			return nil, fmt.Errorf("waiting for stop: %w", err)
		}
	}
	m := t.stop
	t.stop = nil
	return m, nil
}

// Output returns and clears the buffered shell output not yet consumed by
// Expect.
func (t *Terminal) Output() string {
	s := string(t.out)
	t.out = t.out[:0]
	return s
}

// next consumes one message into the output buffer or the stop slot.
func (t *Terminal) next(ctx context.Context) error {
	select {
	case m, ok := <-t.msgs:
		if !ok {
			return fmt.Errorf("terminal ended: %w", t.Err())
		}
		if m.Header.Proto != wire.ProtoShell {
			return nil
		}
		switch m.Header.MsgType {
		case wire.ShellData:
			t.out = append(t.out, m.Body...)
		case wire.ShellStop:
			t.stop = m
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
