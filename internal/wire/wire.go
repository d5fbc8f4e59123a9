// Package wire is the ProtoMsg envelope spoken on the device websocket:
// protocol numbers, message types, property keys and bodies, encoded with
// vmihailenco/msgpack/v5 so the bytes match what the Mender server's own Go
// code produces and expects (docs/protocol.md §2.1).
package wire

import (
	"fmt"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// Protocol numbers carried in Header.Proto.
const (
	ProtoInvalid      uint16 = 0
	ProtoShell        uint16 = 1
	ProtoFileTransfer uint16 = 2
	ProtoPortForward  uint16 = 3
	ProtoMenderClient uint16 = 4
	ProtoControl      uint16 = 0xFFFF
)

// ProtocolVersion is the only control-handshake version there is.
const ProtocolVersion = 1

// Control message types (proto 0xFFFF).
const (
	TypePing   = "ping"
	TypePong   = "pong"
	TypeOpen   = "open"
	TypeAccept = "accept"
	TypeClose  = "close"
	TypeError  = "error"
)

// Shell message types (proto 1).
const (
	ShellNew    = "new"
	ShellData   = "shell"
	ShellResize = "resize"
	ShellStop   = "stop"
	ShellPing   = "ping"
	ShellPong   = "pong"
)

// Property keys.
const (
	PropStatus         = "status"
	PropUserID         = "user_id"
	PropTerminalWidth  = "terminal_width"
	PropTerminalHeight = "terminal_height"
	PropTimeout        = "timeout"
	PropOffset         = "offset"
	PropConnectionID   = "connection_id"
	PropMsgID          = "msgid"
)

// Status values of the "status" property.
const (
	StatusNormal  = 1
	StatusError   = 2
	StatusControl = 3
)

// Header is the "hdr" map of a ProtoMsg. Field order and tags match the
// server's struct so encoding yields the same bytes.
type Header struct {
	Proto      uint16                 `msgpack:"proto"`
	MsgType    string                 `msgpack:"typ,omitempty"`
	SessionID  string                 `msgpack:"sid,omitempty"`
	Properties map[string]interface{} `msgpack:"props,omitempty"`

	// small holds the props of a frame decoded by UnmarshalPooled when
	// they are a few known keys with integer or string values (a file
	// chunk's or ack's offset and user_id): no map, no boxed values, so
	// that a transfer's frames decode without garbage. Properties is
	// nil then; a Properties set later wins over small. Read props
	// through IntProp, StringProp, Prop, HasProp and PropCount, copy
	// them with Clone.
	small smallProps
}

// maxSmallProps is how many props Header.small holds.
const maxSmallProps = 4

type smallProp struct {
	key   string
	str   string
	num   int64
	isStr bool
}

type smallProps struct {
	n int
	e [maxSmallProps]smallProp
}

// smallList returns h's props when they are held in small, else nil.
func (h *Header) smallList() []smallProp {
	if h.Properties != nil {
		return nil
	}
	return h.small.e[:h.small.n]
}

func (h *Header) findSmall(key string) *smallProp {
	for i, p := range h.smallList() {
		if p.key == key {
			return &h.small.e[i]
		}
	}
	return nil
}

// Prop returns a property's value, integers as the Go type they were
// decoded with (int64 for props held without a map).
func (h *Header) Prop(key string) (interface{}, bool) {
	if p := h.findSmall(key); p != nil {
		if p.isStr {
			return p.str, true
		}
		return p.num, true
	}
	v, ok := h.Properties[key]
	return v, ok
}

// HasProp reports whether the property is present, whatever its value.
func (h *Header) HasProp(key string) bool {
	if h.findSmall(key) != nil {
		return true
	}
	_, ok := h.Properties[key]
	return ok
}

// PropCount is the number of properties.
func (h *Header) PropCount() int {
	if h.Properties != nil {
		return len(h.Properties)
	}
	return h.small.n
}

// Clone returns a copy of h that shares no props with it, for a reply
// that echoes a request's props.
func (h *Header) Clone() Header {
	c := *h
	if len(h.Properties) > 0 {
		c.Properties = make(map[string]interface{}, len(h.Properties))
		for k, v := range h.Properties {
			c.Properties[k] = v
		}
	}
	return c
}

// ProtoMsg is one websocket message.
type ProtoMsg struct {
	Header Header `msgpack:"hdr"`
	Body   []byte `msgpack:"body,omitempty"`
	// pool lent Body (UnmarshalPooled); Release gives it back.
	pool *BodyPool
	// from lent the message itself (UnmarshalPooled); Recycle gives it
	// back.
	from *BodyPool
}

// Marshal encodes m as the upstream Go library does, except that every
// integer property is written in msgpack's int64 form (d3): Go clients that
// decode props into interface{} get the Go type that was encoded, and
// mender-cli asserts status and timeout as int64 (a compact 02 decodes as
// int8, and its refusal check then takes a refused terminal for a started
// one). The server re-encodes what it relays with the type it decoded, so
// int64 reaches the client through it.
func Marshal(m *ProtoMsg) ([]byte, error) {
	if m.Header.Properties == nil && m.Header.small.n > 0 {
		// Props decoded without a map, echoed (an upload's ack).
		return appendSmall(make([]byte, 0, smallSize(m)), &m.Header, m.Body), nil
	}
	if k, _, ok := oneIntProp(m.Header.Properties); ok && len(m.Header.MsgType) < 32 && len(m.Header.SessionID) < 1<<16 && len(k) < 32 {
		// The frames of a transfer: one allocation of the exact size.
		h := &m.Header
		size := 64 + len(h.MsgType) + len(h.SessionID) + len(k) + len(m.Body)
		return appendOneIntProp(make([]byte, 0, size), h, m.Body), nil
	}
	if p := int64Props(m.Header.Properties); p != nil {
		c := *m
		c.Header.Properties = p
		m = &c
	}
	b, err := msgpack.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode protomsg proto=%d typ=%q: %w", m.Header.Proto, m.Header.MsgType, err)
	}
	return b, nil
}

// int64Props returns a copy of props with every integer value as int64, or
// nil when there is nothing to change (the caller's map is never touched).
func int64Props(props map[string]interface{}) map[string]interface{} {
	var out map[string]interface{}
	for k, v := range props {
		n, ok := asInt64(v)
		if !ok {
			continue
		}
		if _, is64 := v.(int64); is64 {
			continue
		}
		if out == nil {
			out = make(map[string]interface{}, len(props))
			for k2, v2 := range props {
				out[k2] = v2
			}
		}
		out[k] = n
	}
	return out
}

// ProtoName names a protocol number for logs and metrics labels.
func ProtoName(p uint16) string {
	switch p {
	case ProtoShell:
		return "shell"
	case ProtoFileTransfer:
		return "filetransfer"
	case ProtoPortForward:
		return "portforward"
	case ProtoMenderClient:
		return "menderclient"
	case ProtoControl:
		return "control"
	default:
		return fmt.Sprintf("0x%04X", p)
	}
}

// IntProp reads an integer property whatever msgpack integer width it was
// sent with (the server re-encodes JS fixints as int8, docs/protocol.md §2.4).
func (h *Header) IntProp(key string) (int64, bool) {
	if p := h.findSmall(key); p != nil {
		return p.num, !p.isStr
	}
	v, ok := h.Properties[key]
	if !ok {
		return 0, false
	}
	if n, ok := asInt64(v); ok {
		return n, true
	}
	switch n := v.(type) {
	case float64:
		if n == float64(int64(n)) {
			return int64(n), true
		}
	case float32:
		if n == float32(int64(n)) {
			return int64(n), true
		}
	}
	return 0, false
}

// asInt64 converts any Go integer type to int64 when it fits.
func asInt64(v interface{}) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > 1<<63-1 {
			return 0, false
		}
		return int64(n), true
	case uint:
		if uint64(n) > 1<<63-1 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

// StringProp reads a string property; a missing or non-string one is "".
func (h *Header) StringProp(key string) string {
	if p := h.findSmall(key); p != nil {
		return p.str
	}
	s, _ := h.Properties[key].(string)
	return s
}

// MemSize estimates the bytes a decoded message holds in memory: its body,
// strings and props with the allocator's and map's overheads. Queues of
// peer messages are bounded by it, so that their bound is in bytes, not
// only in messages.
func (m *ProtoMsg) MemSize() int {
	// The message struct (with its header's inline props) and the
	// allocator's and queue's overheads.
	const msgOverhead, propOverhead = 80 + int(unsafe.Sizeof(ProtoMsg{})), 48
	h := &m.Header
	n := msgOverhead + len(m.Body) + len(h.MsgType) + len(h.SessionID)
	for k, v := range h.Properties {
		n += propOverhead + len(k) + scalarSize(v)
	}
	for _, p := range h.smallList() {
		n += propOverhead + len(p.key) + len(p.str) + 8
	}
	return n
}
