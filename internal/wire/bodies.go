package wire

import (
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

// DecodeBody decodes a msgpack body into v.
func DecodeBody(b []byte, v interface{}) error {
	if len(b) == 0 {
		return fmt.Errorf("decode %T: empty body", v)
	}
	if err := msgpack.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
