package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// MalformedKind classifies why a frame could not be decoded. The values are
// stable: they are used as a metrics label.
type MalformedKind string

// Kinds of malformed frame.
const (
	MalformedEmpty     MalformedKind = "empty"
	MalformedNotMap    MalformedKind = "not_map"
	MalformedTruncated MalformedKind = "truncated"
	MalformedSyntax    MalformedKind = "invalid_msgpack"
	MalformedNoHeader  MalformedKind = "missing_header"
	MalformedWrongType MalformedKind = "wrong_type"
	MalformedOversized MalformedKind = "oversized"
	MalformedFrameType MalformedKind = "frame_type"
)

// DecodeError reports a frame that is not a valid ProtoMsg. Partial holds
// whatever header fields were read before the problem, so the caller can
// still address an error reply to the session.
type DecodeError struct {
	Kind    MalformedKind
	Partial Header
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("malformed frame (%s): %v", e.Kind, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Unmarshal decodes one ProtoMsg leniently, as the server's peers produce
// them: unknown keys are skipped, the body may be bin or str, integers may
// use any width. The message shares no memory with b, so the caller may
// reuse b.
func Unmarshal(b []byte) (*ProtoMsg, error) { return UnmarshalPooled(b, nil) }

// UnmarshalPooled is Unmarshal with a body of up to BodyPoolSize bytes
// taken from pool (nil: allocated); the consumer may give it back with
// Release once done with it.
//
// With a pool, the message itself comes from the pool too (give it back
// with Recycle), and props that are a few known keys with integer or
// string values are held without a map (see Header.small): a transfer's
// chunks and acks then decode without any allocation.
func UnmarshalPooled(b []byte, pool *BodyPool) (*ProtoMsg, error) {
	if len(b) == 0 {
		return nil, &DecodeError{Kind: MalformedEmpty, Err: errors.New("empty frame")}
	}
	var m *ProtoMsg
	var r *bytes.Reader
	if pool != nil {
		m = pool.msg()
		// Only the decoding goroutine uses the pool's reader.
		r = &pool.rd
		r.Reset(b)
	} else {
		m = &ProtoMsg{}
		r = bytes.NewReader(b)
	}
	// A pooled decoder: a new one per frame was a third of an upload's
	// garbage. Nothing decoded refers to its buffer (strings and bytes
	// are copied out).
	d := msgpack.GetDecoder()
	d.Reset(r)
	defer msgpack.PutDecoder(d)
	v := valueReader{d: d, r: r, b: b, pool: pool}
	fail := func(kind MalformedKind, err error) (*ProtoMsg, error) {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			kind = MalformedTruncated
		}
		return nil, &DecodeError{Kind: kind, Partial: m.Header, Err: err}
	}
	c, err := d.PeekCode()
	if err != nil {
		return fail(MalformedSyntax, err)
	}
	if !isMap(c) {
		return fail(MalformedNotMap, fmt.Errorf("top level is msgpack code 0x%02x, not a map", c))
	}
	n, err := d.DecodeMapLen()
	if err != nil {
		return fail(MalformedSyntax, err)
	}
	// A field of the wrong type is remembered and skipped, so the rest of the
	// header (above all the sid) is still read for the error reply.
	var typeErr error
	haveHeader := false
	for i := 0; i < n; i++ {
		key, kerr, err := decodeString(v)
		if err != nil {
			return fail(MalformedSyntax, fmt.Errorf("message key: %w", err))
		}
		if kerr != nil {
			if typeErr == nil {
				typeErr = fmt.Errorf("message key: %w", kerr)
			}
			if _, err := v.value(0, false); err != nil {
				return fail(MalformedSyntax, err)
			}
			continue
		}
		switch key {
		case "hdr":
			herr, err := decodeHeader(v, &m.Header)
			if err != nil {
				return fail(MalformedSyntax, fmt.Errorf("hdr: %w", err))
			}
			if herr != nil && typeErr == nil {
				typeErr = fmt.Errorf("hdr: %w", herr)
			}
			haveHeader = herr == nil
		case "body":
			v.body = true
			body, terr, err := decodeBytes(v)
			v.body = false
			if err != nil {
				return fail(MalformedSyntax, fmt.Errorf("body: %w", err))
			}
			if terr != nil && typeErr == nil {
				typeErr = fmt.Errorf("body: %w", terr)
			}
			if m.pool != nil {
				m.Release() // a second body: the first goes back
			}
			m.Body, m.pool = body, nil
			if pool != nil && cap(body) == BodyPoolSize {
				m.pool = pool
			}
		default:
			if _, err := v.value(0, false); err != nil {
				return fail(MalformedSyntax, fmt.Errorf("value of %q: %w", key, err))
			}
		}
	}
	if typeErr != nil {
		return fail(MalformedWrongType, typeErr)
	}
	if !haveHeader {
		return fail(MalformedNoHeader, errors.New("no hdr"))
	}
	return m, nil
}

// decodeHeader fills h. A value of the wrong type is skipped and reported as
// typeErr (the first one); err is a msgpack syntax or EOF error that ends
// decoding.
func decodeHeader(v valueReader, h *Header) (typeErr, err error) {
	d := v.d
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	if c == msgpcode.Nil {
		return errors.New("nil"), d.DecodeNil()
	}
	if !isMap(c) {
		_, err := v.value(0, false)
		return fmt.Errorf("msgpack code 0x%02x, not a map", c), err
	}
	n, err := v.mapLen()
	if err != nil {
		return nil, err
	}
	note := func(field string, e error) {
		if e != nil && typeErr == nil {
			typeErr = fmt.Errorf("%s: %w", field, e)
		}
	}
	for i := 0; i < n; i++ {
		key, kerr, err := decodeString(v)
		if err != nil {
			return typeErr, err
		}
		if kerr != nil {
			note("key", kerr)
			if _, err := v.value(0, false); err != nil {
				return typeErr, err
			}
			continue
		}
		switch key {
		case "proto":
			c, err := d.PeekCode()
			if err != nil {
				return typeErr, err
			}
			if !isInt(c) {
				if _, err := v.value(0, false); err != nil {
					return typeErr, err
				}
				note(key, fmt.Errorf("msgpack code 0x%02x, not an integer", c))
				continue
			}
			n, err := d.DecodeInterfaceLoose()
			if err != nil {
				return typeErr, err
			}
			p, ok := toProto(n)
			if !ok {
				note(key, fmt.Errorf("%v is not a protocol number", n))
			}
			h.Proto = p
		case "typ":
			s, terr, err := decodeString(v)
			if err != nil {
				return typeErr, err
			}
			note(key, terr)
			h.MsgType = s
		case "sid":
			s, terr, err := decodeString(v)
			if err != nil {
				return typeErr, err
			}
			note(key, terr)
			h.SessionID = s
		case "props":
			if v.pool != nil && decodeSmallProps(v, &h.small) {
				h.Properties = nil
				continue
			}
			h.small = smallProps{}
			p, terr, err := decodeProps(v)
			if err != nil {
				return typeErr, err
			}
			note(key, terr)
			h.Properties = p
		default:
			if _, err := v.value(0, false); err != nil {
				return typeErr, err
			}
		}
	}
	return typeErr, nil
}

func isInt(c byte) bool {
	return msgpcode.IsFixedNum(c) || (c >= msgpcode.Uint8 && c <= msgpcode.Int64)
}

func isArray(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

func isMap(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}

func toProto(v interface{}) (uint16, bool) {
	switch n := v.(type) {
	case int64:
		if n >= 0 && n <= 0xFFFF {
			return uint16(n), true
		}
	case uint64:
		if n <= 0xFFFF {
			return uint16(n), true
		}
	}
	return 0, false
}

// decodeString reads a str, bin or nil value. A value of another type is
// skipped and reported as typeErr.
func decodeString(v valueReader) (s string, typeErr, err error) {
	b, typeErr, err := decodeKey(v)
	if b == nil || typeErr != nil || err != nil {
		return "", typeErr, err
	}
	return v.intern(b), nil, nil
}

// decodeBytes reads a bin, str or nil value: peers send terminal input as
// str (the JS UI) or bin (Go clients).
func decodeBytes(v valueReader) (b []byte, typeErr, err error) {
	d := v.d
	c, err := d.PeekCode()
	if err != nil {
		return nil, nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return nil, nil, d.DecodeNil()
	case msgpcode.IsString(c), msgpcode.IsBin(c):
		b, err := v.raw()
		return b, nil, err
	}
	_, err = v.value(0, false)
	return nil, fmt.Errorf("msgpack code 0x%02x, not bin or str", c), err
}

// Properties other than the ones tether reads (the Prop* keys) are kept
// only up to these bounds, for the echo: a file-transfer error reply and
// an upload's ack copy the request's props back, as upstream does. The
// server adds nothing but user_id, so real frames never reach the bounds;
// without them a 1 MiB frame of 131,000 tiny props decodes into a map of
// ten megabytes.
const (
	maxOtherProps     = 16
	maxOtherPropBytes = 1024
)

func decodeProps(v valueReader) (props map[string]interface{}, typeErr, err error) {
	d := v.d
	c, err := d.PeekCode()
	if err != nil {
		return nil, nil, err
	}
	if c == msgpcode.Nil {
		return nil, nil, d.DecodeNil()
	}
	if !isMap(c) {
		_, err := v.value(0, false)
		return nil, fmt.Errorf("msgpack code 0x%02x, not a map", c), err
	}
	n, err := v.mapLen()
	if err != nil {
		return nil, nil, err
	}
	// Not make(…, n): n is the peer's claim, and most entries may be
	// dropped below.
	props = make(map[string]interface{}, min(n, 4))
	others, otherBytes := 0, 0
	for i := 0; i < n; i++ {
		kb, kerr, err := decodeKey(v)
		if err != nil {
			return nil, typeErr, err
		}
		// Properties tether reads are all scalars. A container value is
		// skipped, not built: a 1 MB frame of empty maps would otherwise
		// cost a hundred megabytes of map headers.
		c, err := d.PeekCode()
		if err != nil {
			return nil, typeErr, fmt.Errorf("%q: %w", kb, err)
		}
		container := isMap(c) || isArray(c)
		k, known := knownProp(kb)
		keep := kerr == nil && !container && (known || (others < maxOtherProps && otherBytes+len(kb) <= maxOtherPropBytes))
		val, err := v.value(0, keep)
		if err != nil {
			return nil, typeErr, fmt.Errorf("%q: %w", kb, err)
		}
		if kerr != nil {
			if typeErr == nil {
				typeErr = fmt.Errorf("key: %w", kerr)
			}
			continue
		}
		if !keep {
			continue
		}
		if !known {
			size := len(kb) + scalarSize(val)
			if otherBytes+size > maxOtherPropBytes {
				continue
			}
			if _, dup := props[string(kb)]; !dup {
				others++
				otherBytes += size
			}
			k = string(kb)
		}
		props[k] = val
	}
	return props, typeErr, nil
}

// decodeSmallProps decodes props into sp when they are at most
// maxSmallProps known keys, each once, with integer (int64-sized) or str
// values. Otherwise, and on any error, it reports false with the reader
// back where it was, for decodeProps to decode them (and report the
// error) as it always has.
func decodeSmallProps(v valueReader, sp *smallProps) bool {
	start := v.r.Size() - int64(v.r.Len())
	if readSmallProps(v, sp) {
		return true
	}
	*sp = smallProps{}
	_, _ = v.r.Seek(start, io.SeekStart)
	return false
}

func readSmallProps(v valueReader, sp *smallProps) bool {
	d := v.d
	c, err := d.PeekCode()
	if err != nil || !isMap(c) {
		return false
	}
	n, err := v.mapLen()
	if err != nil || n == 0 || n > maxSmallProps {
		return false
	}
	sp.n = 0
	for i := 0; i < n; i++ {
		kb, kerr, err := decodeKey(v)
		if err != nil || kerr != nil || kb == nil {
			return false
		}
		k, known := knownProp(kb)
		if !known {
			return false
		}
		for _, p := range sp.e[:sp.n] {
			if p.key == k {
				return false // a repeated key: the map decides which wins
			}
		}
		c, err := d.PeekCode()
		if err != nil {
			return false
		}
		e := &sp.e[sp.n]
		*e = smallProp{key: k}
		switch {
		case isInt(c) && c != msgpcode.Uint64:
			if e.num, err = d.DecodeInt64(); err != nil {
				return false
			}
		case c == msgpcode.Uint64:
			u, err := d.DecodeUint64()
			if err != nil || u > 1<<63-1 {
				return false
			}
			e.num = int64(u)
		case msgpcode.IsString(c):
			b, err := v.view()
			if err != nil {
				return false
			}
			e.str, e.isStr = v.intern(b), true
		default:
			return false
		}
		sp.n++
	}
	return true
}

// decodeKey reads a props key (str, bin or nil) as a window into the
// frame, so that a key that is dropped costs nothing. A key of another
// type is skipped and reported as typeErr.
func decodeKey(v valueReader) (b []byte, typeErr, err error) {
	d := v.d
	c, err := d.PeekCode()
	if err != nil {
		return nil, nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return nil, nil, d.DecodeNil()
	case msgpcode.IsString(c), msgpcode.IsBin(c):
		b, err := v.view()
		return b, nil, err
	}
	_, err = v.value(0, false)
	return nil, fmt.Errorf("msgpack code 0x%02x, not a string", c), err
}

// knownProp returns the constant for a property key some protocol reads.
func knownProp(b []byte) (string, bool) {
	switch string(b) { // compared in place, not converted
	case PropStatus:
		return PropStatus, true
	case PropUserID:
		return PropUserID, true
	case PropTerminalWidth:
		return PropTerminalWidth, true
	case PropTerminalHeight:
		return PropTerminalHeight, true
	case PropTimeout:
		return PropTimeout, true
	case PropOffset:
		return PropOffset, true
	case PropConnectionID:
		return PropConnectionID, true
	case PropMsgID:
		return PropMsgID, true
	}
	return "", false
}

// scalarSize is what a kept property value counts against
// maxOtherPropBytes: its bytes for a string or bin, 8 otherwise.
func scalarSize(v interface{}) int {
	switch x := v.(type) {
	case string:
		return len(x)
	case []byte:
		return len(x)
	}
	return 8
}

// maxDepth bounds nesting inside property values and skipped fields. Real
// peers send flat properties; a deeply nested frame would otherwise cost
// seconds of recursion on the read path.
const maxDepth = 8

var errTooDeep = errors.New("values nested too deeply")

// valueReader decodes or skips arbitrary values with bounded depth and with
// container lengths checked against the bytes left, so a frame cannot make
// the decoder allocate more than the frame could hold.
type valueReader struct {
	d *msgpack.Decoder
	r *bytes.Reader
	b []byte // what r reads, for views; nil: view copies
	// body says raw reads the message's body, which pool may lend.
	body bool
	pool *BodyPool
}

func (v valueReader) mapLen() (int, error) {
	n, err := v.d.DecodeMapLen()
	if err != nil {
		return 0, err
	}
	if n > v.r.Len() { // every entry takes at least two bytes
		return 0, io.ErrUnexpectedEOF
	}
	return n, nil
}

// raw reads a str or bin value, refusing a claimed length longer than what
// is left of the frame before allocating anything.
func (v valueReader) raw() ([]byte, error) {
	n, err := v.d.DecodeBytesLen()
	if err != nil || n < 0 {
		return nil, err
	}
	if n > v.r.Len() {
		return nil, io.ErrUnexpectedEOF
	}
	var b []byte
	if v.body {
		b, _ = v.pool.get(n)
	} else {
		b = make([]byte, n)
	}
	_, err = io.ReadFull(v.r, b)
	return b, err
}

// view reads a str or bin value as a window into the frame, valid only
// until the frame is reused: for values turned into strings at once.
func (v valueReader) view() ([]byte, error) {
	if v.b == nil {
		return v.raw()
	}
	n, err := v.d.DecodeBytesLen()
	if err != nil || n < 0 {
		return nil, err
	}
	left := v.r.Len()
	if n > left {
		return nil, io.ErrUnexpectedEOF
	}
	off := len(v.b) - left
	if _, err := v.r.Seek(int64(n), io.SeekCurrent); err != nil {
		return nil, err
	}
	return v.b[off : off+n], nil
}

// intern returns the string b spells: a constant (internConst), then
// one of the pool's recent strings (a transfer's frames repeat their
// session and user ids), a copy otherwise.
func (v valueReader) intern(b []byte) string {
	if s, ok := internConst(b); ok {
		return s
	}
	if v.pool != nil && len(b) <= maxRecentLen {
		return v.pool.recentString(b)
	}
	return string(b)
}

// internConst returns the constant b spells, if it is one of those: the
// keys and message types every frame carries, so decoding them allocates
// nothing.
func internConst(b []byte) (string, bool) {
	switch string(b) { // compared in place, not converted
	case "hdr":
		return "hdr", true
	case "body":
		return "body", true
	case "proto":
		return "proto", true
	case "typ":
		return "typ", true
	case "sid":
		return "sid", true
	case "props":
		return "props", true
	case PropStatus:
		return PropStatus, true
	case PropUserID:
		return PropUserID, true
	case PropTerminalWidth:
		return PropTerminalWidth, true
	case PropTerminalHeight:
		return PropTerminalHeight, true
	case PropTimeout:
		return PropTimeout, true
	case PropOffset:
		return PropOffset, true
	case PropConnectionID:
		return PropConnectionID, true
	case PropMsgID:
		return PropMsgID, true
	case ShellData:
		return ShellData, true
	case ShellNew:
		return ShellNew, true
	case ShellResize:
		return ShellResize, true
	case ShellStop:
		return ShellStop, true
	case ShellPing:
		return ShellPing, true
	case ShellPong:
		return ShellPong, true
	}
	return "", false
}

// skipRaw skips a str or bin value after checking its claimed length.
func (v valueReader) skipRaw() error {
	n, err := v.d.DecodeBytesLen()
	if err != nil || n < 0 {
		return err
	}
	if n > v.r.Len() {
		return io.ErrUnexpectedEOF
	}
	_, err = v.r.Seek(int64(n), io.SeekCurrent)
	return err
}

// value reads one value; with keep it returns it (maps as
// map[string]interface{}), otherwise it only skips it.
func (v valueReader) value(depth int, keep bool) (interface{}, error) {
	if depth > maxDepth {
		return nil, errTooDeep
	}
	c, err := v.d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case isMap(c):
		n, err := v.mapLen()
		if err != nil {
			return nil, err
		}
		var m map[string]interface{}
		if keep {
			m = make(map[string]interface{}, n)
		}
		for i := 0; i < n; i++ {
			k, err := v.value(depth+1, keep)
			if err != nil {
				return nil, err
			}
			val, err := v.value(depth+1, keep)
			if err != nil {
				return nil, err
			}
			if keep {
				m[fmt.Sprint(k)] = val
			}
		}
		if keep {
			return m, nil
		}
		return nil, nil
	case isArray(c):
		n, err := v.d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if n > v.r.Len() {
			return nil, io.ErrUnexpectedEOF
		}
		var a []interface{}
		if keep {
			a = make([]interface{}, 0, n)
		}
		for i := 0; i < n; i++ {
			val, err := v.value(depth+1, keep)
			if err != nil {
				return nil, err
			}
			if keep {
				a = append(a, val)
			}
		}
		if keep {
			return a, nil
		}
		return nil, nil
	case msgpcode.IsExt(c):
		// Extensions (timestamps) never matter in headers; skip them
		// after checking the claimed length against what is left.
		_, n, err := v.d.DecodeExtHeader()
		if err != nil {
			return nil, err
		}
		if n > v.r.Len() {
			return nil, io.ErrUnexpectedEOF
		}
		_, err = v.r.Seek(int64(n), io.SeekCurrent)
		return nil, err
	case msgpcode.IsString(c) || msgpcode.IsBin(c):
		if !keep {
			return nil, v.skipRaw()
		}
		if msgpcode.IsString(c) {
			b, err := v.view()
			return v.intern(b), err
		}
		return v.raw()
	case keep:
		return v.d.DecodeInterface()
	default:
		return nil, v.d.Skip()
	}
}
