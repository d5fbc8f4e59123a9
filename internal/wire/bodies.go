package wire

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// OpenBody is the body of a control "open".
type OpenBody struct {
	Versions []int `msgpack:"versions"`
}

// AcceptBody is the body of a control "accept".
type AcceptBody struct {
	Version   int      `msgpack:"version"`
	Protocols []uint16 `msgpack:"protocols"`
}

// ErrorBody is the body of a control "error". Code is never sent by
// upstream; it is kept for decoding the newer server's messages.
type ErrorBody struct {
	Error        string `msgpack:"err"`
	Close        bool   `msgpack:"close"`
	MessageProto uint16 `msgpack:"msgproto,omitempty"`
	MessageType  string `msgpack:"msgtype,omitempty"`
	MessageID    string `msgpack:"msgid,omitempty"`
	Code         int    `msgpack:"code,omitempty"`
}

// EncodeBody encodes a body struct; the body types above cannot fail to
// encode, so an error here is a programming error surfaced to the caller.
func EncodeBody(v interface{}) ([]byte, error) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T body: %w", v, err)
	}
	return b, nil
}

// checkBounds walks one msgpack value without keeping it.
func checkBounds(b []byte) error {
	r := bytes.NewReader(b)
	_, err := valueReader{d: msgpack.NewDecoder(r), r: r}.value(0, false)
	return err
}

// DecodeBody decodes a msgpack body into v. The body is walked first with
// the frame decoder's bounds (claimed lengths checked against the bytes
// left, nesting depth limited): msgpack's own decoder allocates what a
// string's header claims, so a 10-byte body claiming a 3 GB map key would
// otherwise cost 3 GB.
func DecodeBody(b []byte, v interface{}) error {
	if len(b) == 0 {
		return fmt.Errorf("decode %T: empty body", v)
	}
	if err := checkBounds(b); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	if err := msgpack.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
