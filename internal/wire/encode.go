package wire

import "encoding/binary"

// AppendShellOutput appends the encoding of a shell "shell" message with
// status 1 carrying data, byte-identical to Marshal of the same message.
// It exists because terminal output is the hot path: no reflection, no map,
// one allocation at most when dst is too small.
func AppendShellOutput(dst []byte, sid string, data []byte) []byte {
	if len(data) == 0 {
		start := len(dst)
		dst = appendShellOutputHdr(dst, sid)
		dst[start] = 0x81 // one entry: no body
		return dst
	}
	return append(AppendShellOutputHeader(dst, sid, len(data)), data...)
}

// AppendShellOutputHeader appends everything AppendShellOutput writes
// before the n > 0 bytes of data. Output read into a buffer behind room
// for this header becomes a frame without being copied.
func AppendShellOutputHeader(dst []byte, sid string, n int) []byte {
	dst = appendShellOutputHdr(dst, sid)
	dst = appendStr(dst, "body")
	return appendBinHeader(dst, n)
}

// appendShellOutputHdr appends the message map's opening and its "hdr"
// entry, announcing two entries (hdr, body).
func appendShellOutputHdr(dst []byte, sid string) []byte {
	dst = append(dst, 0x82)
	dst = appendStr(dst, "hdr")
	if sid == "" {
		dst = append(dst, 0x83)
	} else {
		dst = append(dst, 0x84)
	}
	dst = appendStr(dst, "proto")
	dst = append(dst, 0xcd, 0x00, byte(ProtoShell))
	dst = appendStr(dst, "typ")
	dst = appendStr(dst, ShellData)
	if sid != "" {
		dst = appendStr(dst, "sid")
		dst = appendStr(dst, sid)
	}
	dst = appendStr(dst, "props")
	dst = append(dst, 0x81)
	dst = appendStr(dst, PropStatus)
	return append(dst, 0xd3, 0, 0, 0, 0, 0, 0, 0, StatusNormal) // int64, as Marshal writes it
}

// ShellOutputOverhead bounds the bytes AppendShellOutput adds around data
// for a session id of length sidLen.
func ShellOutputOverhead(sidLen int) int { return 64 + sidLen }

func appendStr(dst []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n < 1<<8:
		dst = append(dst, 0xd9, byte(n))
	case n < 1<<16:
		dst = append(dst, 0xda)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0xdb)
		dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	}
	return append(dst, s...)
}

func appendBinHeader(dst []byte, n int) []byte {
	switch {
	case n < 1<<8:
		return append(dst, 0xc4, byte(n))
	case n < 1<<16:
		dst = append(dst, 0xc5)
		return binary.BigEndian.AppendUint16(dst, uint16(n))
	}
	dst = append(dst, 0xc6)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// appendOneIntProp appends the encoding of a message whose props hold at
// most one integer (a file_chunk or ack with its offset), byte-identical to
// msgpack's of the same ProtoMsg: the file-transfer hot path, one exactly
// sized allocation per frame instead of an encoder's growing buffers.
func appendOneIntProp(dst []byte, h *Header, body []byte) []byte {
	key, val, _ := oneIntProp(h.Properties)
	if len(h.Properties) == 0 {
		return appendMsg(dst, h, nil, body)
	}
	p := [1]smallProp{{key: key, num: val}}
	return appendMsg(dst, h, p[:], body)
}

// appendSmall appends the encoding of a message whose props are held
// without a map (Header.small), as Marshal writes a map of the same
// props: integers as int64, in the order they arrived.
func appendSmall(dst []byte, h *Header, body []byte) []byte {
	return appendMsg(dst, h, h.smallList(), body)
}

// smallSize bounds what appendSmall writes for m.
func smallSize(m *ProtoMsg) int {
	h := &m.Header
	n := 64 + len(h.MsgType) + len(h.SessionID) + len(m.Body)
	for _, p := range h.smallList() {
		n += 16 + len(p.key) + len(p.str)
	}
	return n
}

// AppendMsg appends the encoding of m to dst when m takes Marshal's fast
// path (props none, one integer, or decoded without a map), byte-identical
// to Marshal's; ok false (dst unchanged) otherwise. A transfer encodes its
// acks into reused buffers with it.
func AppendMsg(dst []byte, m *ProtoMsg) (b []byte, ok bool) {
	h := &m.Header
	if h.Properties == nil {
		return appendMsg(dst, h, h.smallList(), m.Body), true
	}
	if _, _, one := oneIntProp(h.Properties); one {
		return appendOneIntProp(dst, h, m.Body), true
	}
	return dst, false
}

// AppendFileChunk appends the encoding of a file_chunk of session sid at
// offset off carrying body, byte-identical to Marshal of the same
// message: a download encodes its chunks into reused buffers with it,
// without a ProtoMsg, a props map or a frame allocation per chunk.
func AppendFileChunk(dst []byte, sid string, off int64, body []byte) []byte {
	h := Header{Proto: ProtoFileTransfer, MsgType: FileChunk, SessionID: sid}
	p := [1]smallProp{{key: PropOffset, num: off}}
	return appendMsg(dst, &h, p[:], body)
}

// FileChunkOverhead bounds the bytes AppendFileChunk adds around a body
// for a session id of length sidLen.
func FileChunkOverhead(sidLen int) int { return 80 + sidLen }

// appendMsg appends the encoding of a message with h's proto, type and
// sid and props (h.Properties is not read): integers as int64, strings
// as str.
func appendMsg(dst []byte, h *Header, props []smallProp, body []byte) []byte {
	entries := byte(0x81)
	if len(body) > 0 {
		entries = 0x82
	}
	dst = append(dst, entries)
	dst = appendStr(dst, "hdr")
	n := byte(1)
	if h.MsgType != "" {
		n++
	}
	if h.SessionID != "" {
		n++
	}
	if len(props) > 0 {
		n++
	}
	dst = append(dst, 0x80|n)
	dst = appendStr(dst, "proto")
	dst = append(dst, 0xcd, byte(h.Proto>>8), byte(h.Proto))
	if h.MsgType != "" {
		dst = appendStr(dst, "typ")
		dst = appendStr(dst, h.MsgType)
	}
	if h.SessionID != "" {
		dst = appendStr(dst, "sid")
		dst = appendStr(dst, h.SessionID)
	}
	if len(props) > 0 {
		dst = appendStr(dst, "props")
		dst = append(dst, 0x80|byte(len(props))) // at most maxSmallProps
		for _, p := range props {
			dst = appendStr(dst, p.key)
			if p.isStr {
				dst = appendStr(dst, p.str)
				continue
			}
			dst = append(dst, 0xd3)
			dst = binary.BigEndian.AppendUint64(dst, uint64(p.num))
		}
	}
	if len(body) > 0 {
		dst = appendStr(dst, "body")
		dst = appendBinHeader(dst, len(body))
		dst = append(dst, body...)
	}
	return dst
}

// oneIntProp reports whether props is empty or holds one integer, and
// which; such messages take appendOneIntProp.
func oneIntProp(props map[string]interface{}) (key string, val int64, ok bool) {
	if len(props) > 1 {
		return "", 0, false
	}
	for k, v := range props {
		n, isInt := asInt64(v)
		return k, n, isInt
	}
	return "", 0, true
}
