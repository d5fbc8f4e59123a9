package wsclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"time"
	"unicode/utf8"
)

// Message types (frame opcodes, RFC 6455 §5.2).
const (
	continuationFrame = 0
	TextMessage       = 1
	BinaryMessage     = 2
	CloseMessage      = 8
	PingMessage       = 9
	PongMessage       = 10
)

// Close codes (RFC 6455 §7.4.1).
const (
	CloseNormalClosure           = 1000
	CloseGoingAway               = 1001
	CloseProtocolError           = 1002
	CloseUnsupportedData         = 1003
	CloseNoStatusReceived        = 1005
	CloseAbnormalClosure         = 1006
	CloseInvalidFramePayloadData = 1007
	ClosePolicyViolation         = 1008
	CloseMessageTooBig           = 1009
	CloseInternalServerErr       = 1011
)

const (
	maxControlPayload = 125
	maxFrameHeader    = 14 // 2 + 8 (length) + 4 (mask key)
	// closeWait bounds the write of a close frame the connection sends by
	// itself (an echo, a protocol error).
	closeWait = time.Second
)

var (
	// ErrCloseSent is returned by writes after a close frame went out.
	ErrCloseSent = errors.New("websocket: close sent")
	// ErrReadLimit is returned when a message exceeds the read limit.
	ErrReadLimit = errors.New("websocket: read limit exceeded")
	// errWriteLock is WriteControl's deadline passing while another write
	// held the connection. It wraps os.ErrDeadlineExceeded, so it reads
	// as a timeout like the net.Conn's own.
	errWriteLock = fmt.Errorf("websocket: waiting for another write: %w", os.ErrDeadlineExceeded)
)

// CloseError is the close frame the server sent, or CloseAbnormalClosure
// when the connection ended without one.
type CloseError struct {
	Code int
	Text string
}

func (e *CloseError) Error() string {
	s := "websocket: close " + strconv.Itoa(e.Code)
	if name := closeCodeName(e.Code); name != "" {
		s += " (" + name + ")"
	}
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

func closeCodeName(code int) string {
	switch code {
	case CloseNormalClosure:
		return "normal"
	case CloseGoingAway:
		return "going away"
	case CloseProtocolError:
		return "protocol error"
	case CloseUnsupportedData:
		return "unsupported data"
	case CloseNoStatusReceived:
		return "no status"
	case CloseAbnormalClosure:
		return "abnormal closure"
	case CloseInvalidFramePayloadData:
		return "invalid payload data"
	case ClosePolicyViolation:
		return "policy violation"
	case CloseMessageTooBig:
		return "message too big"
	case CloseInternalServerErr:
		return "internal server error"
	}
	return ""
}

// FormatCloseMessage is the payload of a close frame; CloseNoStatusReceived
// gives the empty payload that stands for it.
func FormatCloseMessage(code int, text string) []byte {
	if code == CloseNoStatusReceived {
		return []byte{}
	}
	b := make([]byte, 2+len(text))
	binary.BigEndian.PutUint16(b, uint16(code))
	copy(b[2:], text)
	return b
}

// Conn is a client websocket. One goroutine may read (NextReader and the
// handlers it calls) while others write: writes are serialised inside.
type Conn struct {
	conn net.Conn // carries the frames: the TLS connection for wss
	br   *bufio.Reader

	// Read side: the reading goroutine's alone.
	readErr    error
	readLimit  int64
	inMessage  bool  // a data message has started and not ended
	readRemain int64 // payload bytes left in the current data frame
	readFinal  bool  // the current data frame ends its message
	readLen    int64 // payload bytes of the current message so far
	mr         messageReader
	ctrl       [maxControlPayload]byte
	onPing     func([]byte) error
	onPong     func([]byte) error

	// Write side, under wmu: a one-slot semaphore rather than a mutex,
	// so that WriteControl can give up at its deadline when a long write
	// holds the connection.
	wmu      chan struct{}
	wbuf     []byte
	cbuf     [maxFrameHeader + maxControlPayload]byte
	writeErr error // sticky: a failed write leaves the stream broken
	// Mask keys need not be secret from the device, only unpredictable
	// to whatever script a browser could have run (RFC 6455 §10.3): a
	// ChaCha8 stream seeded from crypto/rand is that, without a system
	// call per frame.
	rng *rand.ChaCha8
}

type messageReader struct{ c *Conn }

func newConn(conn net.Conn, br *bufio.Reader, writeBufSize int, seed [32]byte) *Conn {
	c := &Conn{conn: conn, br: br, wmu: make(chan struct{}, 1), wbuf: make([]byte, writeBufSize),
		rng: rand.NewChaCha8(seed)}
	c.mr.c = c
	return c
}

// NetConn is the connection the frames travel on: a *tls.Conn for wss
// (its NetConn method gives the TCP connection), else what was dialled.
func (c *Conn) NetConn() net.Conn { return c.conn }

// Close closes the connection without a close frame; send one first with
// WriteControl for a clean close.
func (c *Conn) Close() error { return c.conn.Close() }

// SetReadDeadline bounds the reads from the connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetReadLimit is the largest message NextReader takes, in bytes; a larger
// one closes the connection with CloseMessageTooBig. 0 means no limit.
func (c *Conn) SetReadLimit(n int64) { c.readLimit = n }

// SetPingHandler is called with each ping's payload, which it must not
// keep; nil answers with a pong. It runs on the reading goroutine; an
// error it returns ends the reading.
func (c *Conn) SetPingHandler(h func(data []byte) error) { c.onPing = h }

// SetPongHandler is called with each pong's payload, which it must not
// keep. It runs on the reading goroutine.
func (c *Conn) SetPongHandler(h func(data []byte) error) { c.onPong = h }

// NextReader waits for the next data message and returns its type and a
// reader of its payload, valid until the next call. What the caller left
// unread of the previous message is skipped. Control frames met on the
// way go to their handlers; a close frame is answered and returned as a
// *CloseError. After an error every call returns the same error.
func (c *Conn) NextReader() (messageType int, r io.Reader, err error) {
	for c.readErr == nil && c.inMessage {
		if c.readRemain > 0 {
			n, err := c.br.Discard(int(min(c.readRemain, 1<<30)))
			c.readRemain -= int64(n)
			if err != nil {
				return 0, nil, c.readFail(err)
			}
			continue
		}
		if c.readFinal {
			c.inMessage = false
			break
		}
		if _, err := c.nextFrame(); err != nil {
			return 0, nil, err
		}
	}
	if c.readErr != nil {
		return 0, nil, c.readErr
	}
	op, err := c.nextFrame()
	if err != nil {
		return 0, nil, err
	}
	return op, &c.mr, nil
}

// ReadMessage reads the next data message whole; a convenience that
// allocates the payload.
func (c *Conn) ReadMessage() (messageType int, p []byte, err error) {
	typ, r, err := c.NextReader()
	if err != nil {
		return 0, nil, err
	}
	p, err = io.ReadAll(r)
	return typ, p, err
}

func (r *messageReader) Read(p []byte) (int, error) {
	c := r.c
	for c.readErr == nil {
		if c.readRemain > 0 {
			if int64(len(p)) > c.readRemain {
				p = p[:c.readRemain]
			}
			n, err := c.br.Read(p)
			c.readRemain -= int64(n)
			if err != nil {
				return n, c.readFail(err)
			}
			return n, nil
		}
		if !c.inMessage {
			return 0, io.EOF
		}
		if c.readFinal {
			c.inMessage = false
			return 0, io.EOF
		}
		if _, err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
	return 0, c.readErr
}

// readFail makes err the sticky read error. The connection ending
// without a close frame is CloseAbnormalClosure, as RFC 6455 §7.1.5 has
// it, so that callers tell a dropped link from a closed one.
func (c *Conn) readFail(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = &CloseError{Code: CloseAbnormalClosure, Text: io.ErrUnexpectedEOF.Error()}
	}
	if c.readErr == nil {
		c.readErr = err
	}
	return c.readErr
}

// protocolError ends the reading: it tells the server why in a close
// frame (best effort) and returns the error.
func (c *Conn) protocolError(code int, format string, args ...any) error {
	err := fmt.Errorf("websocket: "+format, args...)
	text := err.Error()
	if len(text) > maxControlPayload-2 {
		text = text[:maxControlPayload-2]
	}
	var b [maxControlPayload]byte
	binary.BigEndian.PutUint16(b[:], uint16(code))
	n := 2 + copy(b[2:], text)
	_ = c.WriteControl(CloseMessage, b[:n], time.Now().Add(closeWait))
	return c.readFail(err)
}

// peek returns the next n bytes of the stream, which the caller then
// discards.
func (c *Conn) peek(n int) ([]byte, error) {
	p, err := c.br.Peek(n)
	if err != nil {
		return nil, c.readFail(err)
	}
	return p, nil
}

// nextFrame reads frame headers until a data frame starts, handling the
// control frames before it, and returns the data frame's opcode.
func (c *Conn) nextFrame() (int, error) {
	for {
		p, err := c.peek(2)
		if err != nil {
			return 0, err
		}
		b0, b1 := p[0], p[1]
		_, _ = c.br.Discard(2)
		fin := b0&0x80 != 0
		op := int(b0 & 0x0f)
		if rsv := b0 & 0x70; rsv != 0 {
			return 0, c.protocolError(CloseProtocolError, "reserved bits %#x set in a frame, but no extension was negotiated", rsv)
		}
		if b1&0x80 != 0 {
			return 0, c.protocolError(CloseProtocolError, "masked frame from the server")
		}
		n := int64(b1 & 0x7f)
		switch n {
		case 126:
			p, err := c.peek(2)
			if err != nil {
				return 0, err
			}
			n = int64(binary.BigEndian.Uint16(p))
			_, _ = c.br.Discard(2)
		case 127:
			p, err := c.peek(8)
			if err != nil {
				return 0, err
			}
			u := binary.BigEndian.Uint64(p)
			_, _ = c.br.Discard(8)
			if u>>63 != 0 {
				return 0, c.protocolError(CloseProtocolError, "frame length %d out of range", u)
			}
			n = int64(u)
		}
		switch op {
		case continuationFrame:
			if !c.inMessage {
				return 0, c.protocolError(CloseProtocolError, "continuation frame without a message to continue")
			}
		case TextMessage, BinaryMessage:
			if c.inMessage {
				return 0, c.protocolError(CloseProtocolError, "new message before the last frame of the previous one")
			}
			c.inMessage, c.readLen = true, 0
		case CloseMessage, PingMessage, PongMessage:
			if !fin {
				return 0, c.protocolError(CloseProtocolError, "fragmented control frame")
			}
			if n > maxControlPayload {
				return 0, c.protocolError(CloseProtocolError, "control frame of %d bytes (at most %d)", n, maxControlPayload)
			}
			data := c.ctrl[:n]
			if _, err := io.ReadFull(c.br, data); err != nil {
				return 0, c.readFail(err)
			}
			if err := c.control(op, data); err != nil {
				return 0, err
			}
			continue
		default:
			return 0, c.protocolError(CloseProtocolError, "unknown opcode %d", op)
		}
		c.readLen += n
		if c.readLimit > 0 && c.readLen > c.readLimit {
			_ = c.WriteControl(CloseMessage, FormatCloseMessage(CloseMessageTooBig, ""), time.Now().Add(closeWait))
			return 0, c.readFail(fmt.Errorf("%w: message of more than %d bytes", ErrReadLimit, c.readLimit))
		}
		c.readRemain, c.readFinal = n, fin
		return op, nil
	}
}

// control handles a control frame's payload.
func (c *Conn) control(op int, data []byte) error {
	switch op {
	case PingMessage:
		if c.onPing != nil {
			if err := c.onPing(data); err != nil {
				return c.readFail(err)
			}
			return nil
		}
		if err := c.WriteControl(PongMessage, data, time.Now().Add(closeWait)); err != nil && !errors.Is(err, ErrCloseSent) {
			return c.readFail(err)
		}
	case PongMessage:
		if c.onPong != nil {
			if err := c.onPong(data); err != nil {
				return c.readFail(err)
			}
		}
	case CloseMessage:
		code, text := CloseNoStatusReceived, ""
		switch {
		case len(data) == 1:
			return c.protocolError(CloseProtocolError, "close frame of 1 byte")
		case len(data) >= 2:
			code, text = int(binary.BigEndian.Uint16(data)), string(data[2:])
			if !validCloseCode(code) {
				return c.protocolError(CloseProtocolError, "invalid close code %d", code)
			}
			if !utf8.ValidString(text) {
				return c.protocolError(CloseInvalidFramePayloadData, "close reason is not UTF-8")
			}
		}
		// Answer with the same code (RFC 6455 §5.5.1), unless this side
		// closed first, then stop reading.
		var echo [2]byte
		binary.BigEndian.PutUint16(echo[:], uint16(code))
		payload := echo[:]
		if code == CloseNoStatusReceived {
			payload = echo[:0]
		}
		_ = c.WriteControl(CloseMessage, payload, time.Now().Add(closeWait))
		return c.readFail(&CloseError{Code: code, Text: text})
	}
	return nil
}

// validCloseCode: the codes a peer may send (RFC 6455 §7.4; 1004-1006 and
// 1015 are reserved, 3000-4999 are for libraries and applications).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// lockWrite takes the write side, giving up at deadline (zero: never).
func (c *Conn) lockWrite(deadline time.Time) error {
	select {
	case c.wmu <- struct{}{}:
		return nil
	default:
	}
	if deadline.IsZero() {
		c.wmu <- struct{}{}
		return nil
	}
	d := time.Until(deadline)
	if d <= 0 {
		return errWriteLock
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case c.wmu <- struct{}{}:
		return nil
	case <-t.C:
		return errWriteLock
	}
}

func (c *Conn) unlockWrite() { <-c.wmu }

// writeFail makes err the sticky write error: a frame cut short leaves
// the stream unusable.
func (c *Conn) writeFail(err error) error {
	if c.writeErr == nil {
		c.writeErr = err
	}
	return err
}

// header puts a frame header with a fresh mask key at the start of b and
// returns its length and the key.
func (c *Conn) header(b []byte, op int, n int) (int, [4]byte) {
	b[0] = 0x80 | byte(op) // FIN: this client never fragments
	h := 2
	switch {
	case n <= 125:
		b[1] = 0x80 | byte(n)
	case n <= 0xffff:
		b[1] = 0x80 | 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		h = 4
	default:
		b[1] = 0x80 | 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		h = 10
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], uint32(c.rng.Uint64()))
	copy(b[h:], key[:])
	return h + 4, key
}

// WriteMessage sends data as one message of type TextMessage or
// BinaryMessage. The frame is masked in the write buffer, which goes out
// whenever it is full: data is not changed, and a message of any size
// costs no allocation.
func (c *Conn) WriteMessage(messageType int, data []byte) error {
	if messageType != TextMessage && messageType != BinaryMessage {
		return fmt.Errorf("websocket: WriteMessage of type %d", messageType)
	}
	if err := c.lockWrite(time.Time{}); err != nil {
		return err
	}
	defer c.unlockWrite()
	if c.writeErr != nil {
		return c.writeErr
	}
	// Clear the deadline a WriteControl may have left: data frames are
	// bounded by the connection itself (the link's progress timeout).
	if err := c.conn.SetWriteDeadline(time.Time{}); err != nil {
		return c.writeFail(err)
	}
	h, key := c.header(c.wbuf, messageType, len(data))
	pos := 0
	for {
		k := copy(c.wbuf[h:], data[pos:])
		maskBytes(key, pos, c.wbuf[h:h+k])
		if _, err := c.conn.Write(c.wbuf[:h+k]); err != nil {
			return c.writeFail(err)
		}
		pos += k
		h = 0
		if pos == len(data) {
			return nil
		}
	}
}

// WriteControl sends a close, ping or pong frame of at most 125 bytes,
// waiting at most until deadline, also for another write to finish.
// After a close frame every write returns ErrCloseSent.
func (c *Conn) WriteControl(messageType int, data []byte, deadline time.Time) error {
	if messageType != CloseMessage && messageType != PingMessage && messageType != PongMessage {
		return fmt.Errorf("websocket: WriteControl of type %d", messageType)
	}
	if len(data) > maxControlPayload {
		return fmt.Errorf("websocket: control frame of %d bytes (at most %d)", len(data), maxControlPayload)
	}
	if err := c.lockWrite(deadline); err != nil {
		return err
	}
	defer c.unlockWrite()
	if c.writeErr != nil {
		return c.writeErr
	}
	h, key := c.header(c.cbuf[:], messageType, len(data))
	n := h + copy(c.cbuf[h:], data)
	maskBytes(key, 0, c.cbuf[h:n])
	if err := c.conn.SetWriteDeadline(deadline); err != nil {
		return c.writeFail(err)
	}
	_, err := c.conn.Write(c.cbuf[:n])
	if messageType == CloseMessage {
		c.writeFail(ErrCloseSent)
	}
	if err != nil {
		return c.writeFail(err)
	}
	return nil
}

// maskBytes XORs b with key, b starting at offset pos of the payload;
// eight bytes at a time, as masking is on the path of every byte sent.
func maskBytes(key [4]byte, pos int, b []byte) {
	var k [8]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	k8 := binary.LittleEndian.Uint64(k[:])
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&7]
	}
}
