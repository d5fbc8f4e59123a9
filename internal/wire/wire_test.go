package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Byte renderings of the envelope as the server's Go library writes it
// (docs/protocol.md §2.1, §2.4).
func TestMarshalMatchesSpecBytes(t *testing.T) {
	tests := []struct {
		name string
		msg  ProtoMsg
		hex  string
	}{
		{
			// Upstream writes status as fixint 01 (docs/protocol.md §2.4);
			// tether writes int64 (d3), the form Go clients assert.
			name: "shell output",
			msg: ProtoMsg{Header: Header{Proto: ProtoShell, MsgType: ShellData, SessionID: "abc",
				Properties: map[string]interface{}{PropStatus: StatusNormal}}, Body: []byte("ls\n")},
			hex: "82 a3686472 84 a570726f746f cd0001 a3747970 a57368656c6c a3736964 a3616263" +
				" a570726f7073 81 a6737461747573 d30000000000000001 a4626f6479 c403 6c730a",
		},
		{
			name: "control pong",
			msg:  ProtoMsg{Header: Header{Proto: ProtoControl, MsgType: TypePong, SessionID: "abc"}},
			hex:  "81 a3686472 83 a570726f746f cdffff a3747970 a4706f6e67 a3736964 a3616263",
		},
		{
			name: "offset is int64",
			msg: ProtoMsg{Header: Header{Proto: ProtoFileTransfer,
				Properties: map[string]interface{}{PropOffset: int64(4096)}}},
			hex: "81 a3686472 82 a570726f746f cd0002 a570726f7073 81 a66f6666736574 d3 0000000000001000",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Marshal(&tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if want := mustHex(t, tt.hex); !bytes.Equal(got, want) {
				t.Fatalf("got  % x\nwant % x", got, want)
			}
		})
	}
	if n := len(mustHex(t, tests[0].hex)); n != 58+8 {
		t.Fatalf("spec says the shell output example is 58 bytes (66 with an int64 status), vector has %d", n)
	}
	if n := len(mustHex(t, tests[1].hex)); n != 32 {
		t.Fatalf("spec says the pong is 32 bytes, vector has %d", n)
	}
}

func TestAppendShellOutputMatchesMarshal(t *testing.T) {
	sids := []string{"", "abc", strings.Repeat("s", 31), strings.Repeat("s", 32), "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}
	sizes := []int{0, 1, 255, 256, 65535, 65536, 100000}
	for _, sid := range sids {
		for _, n := range sizes {
			data := bytes.Repeat([]byte{'x'}, n)
			want, err := Marshal(&ProtoMsg{Header: Header{Proto: ProtoShell, MsgType: ShellData, SessionID: sid,
				Properties: map[string]interface{}{PropStatus: StatusNormal}}, Body: data})
			if err != nil {
				t.Fatal(err)
			}
			got := AppendShellOutput(nil, sid, data)
			if !bytes.Equal(got, want) {
				t.Fatalf("sid %q len %d: fast path differs from msgpack\n got % x\nwant % x", sid, n, head(got), head(want))
			}
			if over := len(got) - n; over > ShellOutputOverhead(len(sid)) {
				t.Fatalf("overhead %d exceeds bound %d", over, ShellOutputOverhead(len(sid)))
			}
			// Appending behind other bytes leaves them alone.
			prefix := []byte("prefix")
			if got := AppendShellOutput(append([]byte{}, prefix...), sid, data); !bytes.Equal(got, append(prefix, want...)) {
				t.Fatalf("sid %q len %d: appending behind a prefix differs\n got % x\nwant % x", sid, n, head(got), head(want))
			}
			// The header alone, then the data, is the same frame.
			if n > 0 {
				hdr := AppendShellOutputHeader(nil, sid, n)
				if got := append(hdr, data...); !bytes.Equal(got, want) {
					t.Fatalf("sid %q len %d: header + data differs\n got % x\nwant % x", sid, n, head(got), head(want))
				}
			}
		}
	}
}

func head(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

func TestUnmarshalLenient(t *testing.T) {
	enc := func(v interface{}) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		frame  []byte
		proto  uint16
		typ    string
		sid    string
		body   string
		width  int64
		hasW   bool
		userID string
	}{
		{
			name:  "str body as from the JS UI, int8 props as re-encoded by the server",
			frame: enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": int8(1), "typ": "shell", "sid": "s1", "props": map[string]interface{}{"user_id": "u1", "terminal_width": int8(40)}}, "body": "ls\r"}),
			proto: 1, typ: "shell", sid: "s1", body: "ls\r", width: 40, hasW: true, userID: "u1",
		},
		{
			name:  "uint64 proto, unknown keys, nil body",
			frame: enc(map[string]interface{}{"x": []int{1, 2}, "hdr": map[string]interface{}{"proto": uint64(0xFFFF), "typ": "ping", "extra": map[string]int{"a": 1}}, "body": nil}),
			proto: ProtoControl, typ: "ping",
		},
		{
			name:  "uint32 width",
			frame: enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": 1, "props": map[string]interface{}{"terminal_width": uint32(300)}}}),
			proto: 1, width: 300, hasW: true,
		},
		{
			name:  "nil props and sid",
			frame: enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": 1, "sid": nil, "props": nil}}),
			proto: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Unmarshal(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if m.Header.Proto != tt.proto || m.Header.MsgType != tt.typ || m.Header.SessionID != tt.sid || string(m.Body) != tt.body {
				t.Fatalf("got %+v body %q", m.Header, m.Body)
			}
			w, ok := m.Header.IntProp(PropTerminalWidth)
			if ok != tt.hasW || w != tt.width {
				t.Fatalf("width = %d, %v; want %d, %v", w, ok, tt.width, tt.hasW)
			}
			if got := m.Header.StringProp(PropUserID); got != tt.userID {
				t.Fatalf("user_id = %q", got)
			}
		})
	}
}

func TestUnmarshalMalformed(t *testing.T) {
	// Sorted keys make "sid" come before "typ", so the partial header is
	// predictable.
	enc := func(v interface{}) []byte {
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		e.SetSortMapKeys(true)
		if err := e.Encode(v); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	type hdrFirst struct {
		Hdr  map[string]interface{} `msgpack:"hdr"`
		Body interface{}            `msgpack:"body"`
	}
	good := enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": 1, "typ": "shell", "sid": "abc"}, "body": []byte("hello")})
	tests := []struct {
		name    string
		frame   []byte
		kind    MalformedKind
		partial string // sid readable before the fault
	}{
		{"empty", nil, MalformedEmpty, ""},
		{"text", []byte("hello, device"), MalformedNotMap, ""},
		{"scalar", enc(42), MalformedNotMap, ""},
		{"array", enc([]int{1, 2}), MalformedNotMap, ""},
		{"string", enc("hdr"), MalformedNotMap, ""},
		{"invalid code", []byte{0xc1}, MalformedNotMap, ""},
		{"truncated", good[:len(good)-3], MalformedTruncated, "abc"},
		{"truncated header", good[:10], MalformedTruncated, ""},
		{"missing header", enc(map[string]interface{}{"body": []byte("x")}), MalformedNoHeader, ""},
		{"header not a map", enc(map[string]interface{}{"hdr": "x"}), MalformedWrongType, ""},
		{"proto is a string", enc(map[string]interface{}{"hdr": map[string]interface{}{"sid": "s9", "proto": "1"}}), MalformedWrongType, "s9"},
		{"proto negative", enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": -1}}), MalformedWrongType, ""},
		{"proto too big", enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": 70000}}), MalformedWrongType, ""},
		{"typ is an int", enc(map[string]interface{}{"hdr": map[string]interface{}{"sid": "s8", "proto": 1, "typ": 5}}), MalformedWrongType, "s8"},
		{"props is an array", enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": 1, "props": []int{1}}}), MalformedWrongType, ""},
		{"body is an int", enc(hdrFirst{Hdr: map[string]interface{}{"proto": 1, "sid": "s7"}, Body: 7}), MalformedWrongType, "s7"},
		{"key is an int", enc(map[int]int{1: 2}), MalformedWrongType, ""},
		{"deeply nested props", append(append([]byte("\x81\xa3hdr\x83\xa3sid\xa2s6\xa5proto\x01\xa5props\x81\xa1a"), bytes.Repeat([]byte{0x91}, 1<<20)...), 1), MalformedSyntax, "s6"},
		{"deeply nested unknown key", append(append([]byte("\x82\xa3hdr\x81\xa5proto\x01\xa1x"), bytes.Repeat([]byte{0x81, 0xa1, 'k'}, 1<<16)...), 1), MalformedSyntax, ""},
		{"huge array claim", []byte("\x81\xa3hdr\x82\xa5proto\x01\xa5props\x81\xa1a\xdd\x30\x30\x30\x30"), MalformedTruncated, ""},
		{"huge str claim", []byte("\x81\xa3hdr\x82\xa5proto\x01\xa3typ\xdb\x7f\xff\xff\xff"), MalformedTruncated, ""},
		{"huge bin claim in props", []byte("\x81\xa3hdr\x82\xa5proto\x01\xa5props\x81\xa10\x93\xc6\xc6000"), MalformedTruncated, ""},
		{"huge body claim", []byte("\x81\xa4body\xc6\x7f\xff\xff\xff"), MalformedTruncated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Unmarshal(tt.frame)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a DecodeError", err)
			}
			if de.Kind != tt.kind {
				t.Fatalf("kind = %s, want %s (%v)", de.Kind, tt.kind, err)
			}
			if de.Partial.SessionID != tt.partial {
				t.Fatalf("partial sid = %q, want %q", de.Partial.SessionID, tt.partial)
			}
		})
	}
}

func TestBodiesRoundTrip(t *testing.T) {
	b, err := EncodeBody(AcceptBody{Version: 1, Protocols: []uint16{ProtoShell}})
	if err != nil {
		t.Fatal(err)
	}
	if want := mustHex(t, "82 a776657273696f6e 01 a970726f746f636f6c73 91 cd0001"); !bytes.Equal(b, want) {
		t.Fatalf("accept body % x", b)
	}
	var e ErrorBody
	eb, _ := EncodeBody(ErrorBody{Error: "boom", Close: true, MessageProto: 3, MessageType: "new"})
	if err := DecodeBody(eb, &e); err != nil || e.Error != "boom" || !e.Close || e.MessageProto != 3 || e.MessageType != "new" || e.MessageID != "" {
		t.Fatalf("round trip: %+v %v", e, err)
	}
	var o OpenBody
	if err := DecodeBody(nil, &o); err == nil {
		t.Fatal("empty body decoded")
	}
	if err := DecodeBody([]byte{0xc1}, &o); err == nil {
		t.Fatal("garbage body decoded")
	}
}

func FuzzUnmarshal(f *testing.F) {
	seeds := [][]byte{
		AppendShellOutput(nil, "abc", []byte("ls\n")),
		{0x81, 0xa3, 'h', 'd', 'r', 0x80},
		{0xc1}, {}, []byte("text"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add(testChunk(4096, "u-1", make([]byte, 10)))
	f.Add([]byte{0x81, 0xa3, 'h', 'd', 'r', 0x81, 0xa5, 'p', 'r', 'o', 'p', 's', 0x82, 0xa6, 'o', 'f', 'f', 's', 'e', 't', 0x05, 0xa6, 'o', 'f', 'f', 's', 'e', 't', 0x06})
	pool := NewBodyPool(2)
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Unmarshal(frame)
		// The link's pooled decode (props without a map) says the same.
		samePooled(t, frame, m, err, pool)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("non-DecodeError %T: %v", err, err)
			}
			return
		}
		// Whatever decodes must re-encode and decode to the same header.
		b, err := Marshal(m)
		if err != nil {
			return // props may hold values msgpack cannot re-encode identically; decoding is what we fuzz
		}
		m2, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if m2.Header.Proto != m.Header.Proto || m2.Header.MsgType != m.Header.MsgType ||
			m2.Header.SessionID != m.Header.SessionID || !bytes.Equal(m2.Body, m.Body) {
			t.Fatalf("round trip changed %+v -> %+v", m.Header, m2.Header)
		}
	})
}

// The link reuses its read buffer, so a decoded message must not alias it.
func TestUnmarshalDoesNotAliasFrame(t *testing.T) {
	frame := AppendShellOutput(nil, "sid-1", []byte("hello"))
	m, err := Unmarshal(frame)
	if err != nil {
		t.Fatal(err)
	}
	for i := range frame {
		frame[i] = 'X'
	}
	if m.Header.SessionID != "sid-1" || string(m.Body) != "hello" || m.Header.MsgType != ShellData {
		t.Fatalf("message changed with the frame: %+v %q", m.Header, m.Body)
	}
	if st, _ := m.Header.IntProp(PropStatus); st != StatusNormal {
		t.Fatalf("status changed with the frame: %v", st)
	}
}

// Go clients (mender-cli) decode props into interface{} and assert int64;
// every integer property tether writes must decode so, whatever Go type it
// was built with, and the caller's map must stay as it was.
func TestIntegerPropsDecodeAsInt64(t *testing.T) {
	type cliHeader struct {
		Properties map[string]interface{} `msgpack:"props"`
	}
	type cliMsg struct {
		Header cliHeader `msgpack:"hdr"`
	}
	props := map[string]interface{}{
		PropStatus: StatusError, PropTimeout: 65, "i8": int8(-3), "u16": uint16(7), "u32": uint32(1 << 31),
		PropOffset: int64(4096), PropUserID: "u", "neg": -1,
	}
	tests := []struct {
		name  string
		frame func(t *testing.T) []byte
		want  map[string]int64
	}{
		{"marshal", func(t *testing.T) []byte {
			b, err := Marshal(&ProtoMsg{Header: Header{Proto: ProtoShell, MsgType: ShellPing, SessionID: "s", Properties: props}})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, map[string]int64{PropStatus: 2, PropTimeout: 65, "i8": -3, "u16": 7, "u32": 1 << 31, PropOffset: 4096, "neg": -1}},
		{"shell output fast path", func(*testing.T) []byte { return AppendShellOutput(nil, "s", []byte("x")) },
			map[string]int64{PropStatus: StatusNormal}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m cliMsg
			if err := msgpack.Unmarshal(tt.frame(t), &m); err != nil {
				t.Fatal(err)
			}
			for k, want := range tt.want {
				got, ok := m.Header.Properties[k].(int64)
				if !ok || got != want {
					t.Errorf("%s = %#v (%T), want int64 %d", k, m.Header.Properties[k], m.Header.Properties[k], want)
				}
			}
		})
	}
	if _, ok := props[PropStatus].(int); !ok {
		t.Fatal("Marshal changed the caller's props")
	}
}

// A keystroke frame is decoded on every key: its keys and message type
// must come out as the package's constants, not fresh copies, and the
// whole decode must stay within a handful of allocations.
func TestKeystrokeDecodeAllocations(t *testing.T) {
	frame, err := Marshal(&ProtoMsg{Header: Header{Proto: ProtoShell, MsgType: ShellData, SessionID: "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
		Properties: map[string]interface{}{PropUserID: "u-1", PropStatus: StatusNormal}}, Body: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Unmarshal(frame)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.MsgType != ShellData || string(m.Body) != "a" || m.Header.Properties[PropUserID] != "u-1" {
		t.Fatalf("decoded %+v", m)
	}
	// The decoded strings must not alias the frame, which the link reuses.
	for i := range frame {
		frame[i] = 'X'
	}
	if m.Header.SessionID != "3f2504e0-4f89-11d3-9a0c-0305e82c3301" || m.Header.Properties[PropUserID] != "u-1" || string(m.Body) != "a" {
		t.Fatalf("decoded message changed with its frame: %+v", m)
	}
	frame, _ = Marshal(&ProtoMsg{Header: Header{Proto: ProtoShell, MsgType: ShellData, SessionID: "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
		Properties: map[string]interface{}{PropUserID: "u-1"}}, Body: []byte("a")})
	allocs := testing.AllocsPerRun(200, func() { _, _ = Unmarshal(frame) })
	// Message, reader, decoder and its buffer, the props map (two), sid,
	// user id, body and the error closure: 10. Copying every key and type
	// twice made it 28.
	if allocs > 10 {
		t.Fatalf("decoding a keystroke frame allocates %.0f times, want at most 10", allocs)
	}
	t.Logf("%.0f allocations per keystroke frame", allocs)
}

// testChunk is a file_chunk as the server relays it: offset and user_id.
func testChunk(off int64, user string, body []byte) []byte {
	b, err := Marshal(&ProtoMsg{Header: Header{Proto: ProtoFileTransfer, MsgType: FileChunk, SessionID: "0b5bd2a6-fd5d-4c39-8aa2-0ef2b4c0f3a1",
		Properties: map[string]interface{}{PropOffset: off, PropUserID: user}}, Body: body})
	if err != nil {
		panic(err)
	}
	return b
}

// samePooled checks that UnmarshalPooled decodes frame as Unmarshal did
// (want, werr): the same error kind, or the same header, props and body,
// integers compared by value; and that what it decoded re-encodes to the
// same props.
func samePooled(t *testing.T, frame []byte, want *ProtoMsg, werr error, pool *BodyPool) {
	t.Helper()
	got, err := UnmarshalPooled(frame, pool)
	if (err == nil) != (werr == nil) {
		t.Fatalf("pooled decode error %v, unpooled %v", err, werr)
	}
	if err != nil {
		var a, b *DecodeError
		if errors.As(err, &a) && errors.As(werr, &b) && a.Kind != b.Kind {
			t.Fatalf("pooled decode error kind %s, unpooled %s", a.Kind, b.Kind)
		}
		return
	}
	defer got.Recycle()
	sameMsg(t, "pooled decode", got, want)
	b, err := Marshal(got)
	if err != nil {
		return // as for the unpooled decode, re-encoding is not what is fuzzed
	}
	again, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("re-decode of the pooled decode: %v", err)
	}
	sameMsg(t, "re-encoded pooled decode", again, want)
}

func sameMsg(t *testing.T, what string, got, want *ProtoMsg) {
	t.Helper()
	g, w := &got.Header, &want.Header
	if g.Proto != w.Proto || g.MsgType != w.MsgType || g.SessionID != w.SessionID || !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("%s: %+v %q, want %+v %q", what, *g, got.Body, *w, want.Body)
	}
	if g.PropCount() != w.PropCount() {
		t.Fatalf("%s: %d props, want %d (%v)", what, g.PropCount(), w.PropCount(), w.Properties)
	}
	for k, wv := range w.Properties {
		gv, ok := g.Prop(k)
		if !ok {
			t.Fatalf("%s: prop %q missing", what, k)
		}
		if wn, ok := asInt64(wv); ok {
			if gn, ok := g.IntProp(k); !ok || gn != wn {
				t.Fatalf("%s: prop %q = %v, want %v", what, k, gv, wv)
			}
			continue
		}
		if !reflect.DeepEqual(gv, wv) {
			t.Fatalf("%s: prop %q = %#v, want %#v", what, k, gv, wv)
		}
	}
}

// The link decodes the frames of a transfer with props that are a few
// known keys without a map; anything else keeps the map, and either way
// the decode matches Unmarshal's.
func TestPooledSmallProps(t *testing.T) {
	frame := func(props map[string]interface{}) []byte {
		b, err := msgpack.Marshal(&ProtoMsg{Header: Header{Proto: ProtoFileTransfer, MsgType: FileAck, SessionID: "s", Properties: props}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		props map[string]interface{}
		small bool
	}{
		{"offset and user", map[string]interface{}{PropOffset: int64(1 << 40), PropUserID: "u-1"}, true},
		{"fixint offset", map[string]interface{}{PropOffset: int8(5)}, true},
		{"negative", map[string]interface{}{PropOffset: int16(-300)}, true},
		{"uint64 that fits", map[string]interface{}{PropOffset: uint64(1 << 62)}, true},
		{"four known", map[string]interface{}{PropOffset: 1, PropUserID: "u", PropMsgID: "m", PropStatus: 2}, true},
		{"uint64 too big", map[string]interface{}{PropOffset: uint64(1 << 63)}, false},
		{"float", map[string]interface{}{PropOffset: 4096.0}, false},
		{"bin", map[string]interface{}{PropUserID: []byte("u")}, false},
		{"unknown key", map[string]interface{}{PropOffset: 1, "x": 1}, false},
		{"nested", map[string]interface{}{PropOffset: map[string]interface{}{"a": 1}}, false},
		{"nil value", map[string]interface{}{PropOffset: nil}, false},
		{"five known", map[string]interface{}{PropOffset: 1, PropUserID: "u", PropMsgID: "m", PropStatus: 2, PropTimeout: 3}, false},
		{"empty", map[string]interface{}{}, false},
	}
	pool := NewBodyPool(2)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := frame(tt.props)
			want, err := Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalPooled(b, pool)
			if err != nil {
				t.Fatal(err)
			}
			if small := got.Header.Properties == nil && got.Header.small.n > 0; small != tt.small {
				t.Errorf("held without a map: %v, want %v", small, tt.small)
			}
			sameMsg(t, "pooled", got, want)
			// A reply echoes them: Marshal and AppendMsg write the same
			// bytes, which decode to the same props.
			echo := &ProtoMsg{Header: got.Header.Clone()}
			m1, err := Marshal(echo)
			if err != nil {
				t.Fatal(err)
			}
			if m2, ok := AppendMsg(nil, echo); ok && !bytes.Equal(m1, m2) {
				t.Errorf("AppendMsg % x, Marshal % x", m2, m1)
			}
			again, err := Unmarshal(m1)
			if err != nil {
				t.Fatal(err)
			}
			sameMsg(t, "echo", again, want)
			got.Recycle()
			if got.Header.PropCount() != 0 || got.from != nil {
				t.Error("a recycled message kept its contents")
			}
		})
	}
	// A repeated key keeps the map's choice (the last).
	dup := []byte{0x81, 0xa3, 'h', 'd', 'r', 0x81, 0xa5, 'p', 'r', 'o', 'p', 's', 0x82, 0xa6, 'o', 'f', 'f', 's', 'e', 't', 0x05, 0xa6, 'o', 'f', 'f', 's', 'e', 't', 0x06}
	want, _ := Unmarshal(dup)
	got, err := UnmarshalPooled(dup, pool)
	if err != nil {
		t.Fatal(err)
	}
	if off, _ := got.Header.IntProp(PropOffset); off != 6 {
		t.Errorf("repeated offset: %d, want 6", off)
	}
	sameMsg(t, "repeated key", got, want)
}

// A transfer's per-frame work on the link is allocation-free once the
// pool is warm: decoding a chunk (offset and user_id props, a 4 KiB
// body) or an ack, giving it back, and encoding the ack that echoes a
// chunk into a reused buffer. Garbage per chunk would be collected every
// few MiB of a transfer, and a fresh daemon's first collection maps a
// megabyte of the runtime's bookkeeping.
func TestTransferFramesAllocFree(t *testing.T) {
	pool := NewBodyPool(4)
	chunk := testChunk(1<<20, "a5e1a2a4-5c7e-4d40-9ef7-1b8b5e0a4a11", make([]byte, FileChunkSize))
	ack := testChunk(1<<20, "a5e1a2a4-5c7e-4d40-9ef7-1b8b5e0a4a11", nil)
	for _, f := range [][]byte{chunk, ack} {
		warm, err := UnmarshalPooled(f, pool)
		if err != nil {
			t.Fatal(err)
		}
		warm.Recycle()
	}
	buf := make([]byte, 0, 512)
	tests := []struct {
		name string
		run  func()
	}{
		{"decode chunk", func() {
			m, _ := UnmarshalPooled(chunk, pool)
			if m.Header.PropCount() != 2 || len(m.Body) != FileChunkSize {
				panic("bad decode")
			}
			m.Recycle()
		}},
		{"decode ack", func() {
			m, _ := UnmarshalPooled(ack, pool)
			if off, _ := m.Header.IntProp(PropOffset); off != 1<<20 {
				panic("bad decode")
			}
			m.Recycle()
		}},
		{"encode ack echo", func() {
			m, _ := UnmarshalPooled(chunk, pool)
			m.Release()
			a := ProtoMsg{Header: m.Header}
			a.Header.MsgType = FileAck
			if _, ok := AppendMsg(buf[:0], &a); !ok {
				panic("no fast path")
			}
			m.Recycle()
		}},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(200, tt.run); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tt.name, n)
		}
	}
}

// BenchmarkUnmarshalPooledChunk is the link's decode of an upload's chunk
// (offset and user_id props, a 4 KiB body) with its pool, given back once
// handled; run with -benchmem.
func BenchmarkUnmarshalPooledChunk(b *testing.B) {
	pool := NewBodyPool(4)
	frame := testChunk(1<<20, "a5e1a2a4-5c7e-4d40-9ef7-1b8b5e0a4a11", make([]byte, FileChunkSize))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m, err := UnmarshalPooled(frame, pool)
		if err != nil {
			b.Fatal(err)
		}
		m.Recycle()
	}
}
