package wire

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// propsBomb is a frame of about n bytes whose props hold {"a": [{}, {}, ...]}:
// each empty map is one byte on the wire.
func propsBomb(n int) []byte {
	b := []byte("\x81\xa3hdr\x84\xa5proto\x01\xa3typ\xa4pong\xa3sid\xa2s1\xa5props\x82\xa7user_id\xa2u1\xa1a\xdd")
	b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	return append(b, bytes.Repeat([]byte{0x80}, n)...)
}

func TestPropsContainersSkipped(t *testing.T) {
	enc := func(v interface{}) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		frame []byte
	}{
		{"array of maps", propsBomb(1000)},
		{"nested map", enc(map[string]interface{}{"hdr": map[string]interface{}{"proto": 1, "typ": "pong", "sid": "s1",
			"props": map[string]interface{}{"user_id": "u1", "a": map[string]interface{}{"x": []int{1, 2}}}}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Unmarshal(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.StringProp(PropUserID); got != "u1" {
				t.Fatalf("user_id = %q; the scalar next to the container is lost", got)
			}
			if v, ok := m.Header.Properties["a"]; ok {
				t.Fatalf("container prop kept: %T", v)
			}
			if m.Header.SessionID != "s1" {
				t.Fatalf("sid %q", m.Header.SessionID)
			}
		})
	}
}

// A 1 MB frame must cost the decoder about what it holds, not a hundred
// times that in map headers.
func TestPropsBombAllocation(t *testing.T) {
	frame := propsBomb(1_000_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 5; i++ {
		if _, err := Unmarshal(frame); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 5; per > 64<<10 {
		t.Fatalf("decoding a 1 MB props bomb allocated %d bytes per frame, want under 64 KiB", per)
	}
}

// manyProps is a frame whose props hold n distinct 8-byte scalar entries
// and then user_id and offset, which must survive whatever precedes them.
func manyProps(n int) []byte {
	b := []byte("\x81\xa3hdr\x84\xa5proto\x02\xa3typ\xaafile_chunk\xa3sid\xa2s1\xa5props\xdf")
	b = append(b, byte((n+2)>>24), byte((n+2)>>16), byte((n+2)>>8), byte(n+2))
	for i := 0; i < n; i++ {
		b = append(b, 0xa6)
		b = append(b, fmt.Sprintf("%06x", i)...)
		b = append(b, byte(i&0x7f))
	}
	b = append(b, "\xa7user_id\xa2u1"...)
	return append(b, "\xa6offset\xd3\x00\x00\x00\x00\x00\x00\x10\x00"...)
}

// Props nobody reads are kept for the echo, but only a few: the ones
// tether reads survive any number of others before them.
func TestPropsBounded(t *testing.T) {
	tests := []struct {
		name       string
		n          int
		wantOthers int
	}{
		{"none", 0, 0},
		{"a few, all kept for the echo", 5, 5},
		{"at the bound", maxOtherProps, maxOtherProps},
		{"131,000 of them", 131000, maxOtherProps},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Unmarshal(manyProps(tt.n))
			if err != nil {
				t.Fatal(err)
			}
			h := m.Header
			if h.StringProp(PropUserID) != "u1" {
				t.Errorf("user_id lost")
			}
			if off, ok := h.IntProp(PropOffset); !ok || off != 4096 {
				t.Errorf("offset %v %v", off, ok)
			}
			if others := len(h.Properties) - 2; others != tt.wantOthers {
				t.Errorf("kept %d other props, want %d", others, tt.wantOthers)
			}
			for i := 0; i < min(tt.n, maxOtherProps); i++ {
				if v, ok := h.IntProp(fmt.Sprintf("%06x", i)); !ok || v != int64(i&0x7f) {
					t.Errorf("prop %06x = %v %v; the first ones are kept", i, v, ok)
				}
			}
		})
	}
	// Big values count against the byte bound.
	b, err := msgpack.Marshal(map[string]interface{}{"hdr": map[string]interface{}{"proto": 2, "typ": "stat",
		"props": map[string]interface{}{"big": strings.Repeat("x", 2000), "small": "y", "custom": "z"}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Header.Properties["big"]; ok {
		t.Error("a 2000-byte prop nobody reads was kept")
	}
	if m.Header.StringProp("small") != "y" || m.Header.StringProp("custom") != "z" {
		t.Errorf("small props lost: %v", m.Header.Properties)
	}
}

// A frame of 131,000 props costs the decoder a few kilobytes, not the
// ten megabytes of a map that holds them all.
func TestManyPropsAllocation(t *testing.T) {
	frame := manyProps(131000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 5; i++ {
		if _, err := Unmarshal(frame); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 5; per > 64<<10 {
		t.Fatalf("decoding 131,000 props allocated %d bytes per frame, want under 64 KiB", per)
	}
}

func TestMemSize(t *testing.T) {
	small := &ProtoMsg{Header: Header{Proto: ProtoFileTransfer, MsgType: FileChunk, SessionID: "s1",
		Properties: map[string]interface{}{PropOffset: int64(0)}}, Body: make([]byte, FileChunkSize)}
	if n := small.MemSize(); n < FileChunkSize || n > FileChunkSize+512 {
		t.Errorf("a chunk counts %d bytes", n)
	}
	// An empty message still counts at least what its struct holds, so
	// that a flood of tiny frames is bounded in bytes too.
	if n, size := (&ProtoMsg{}).MemSize(), int(unsafe.Sizeof(ProtoMsg{})); n < size {
		t.Errorf("an empty message counts %d bytes, its struct is %d", n, size)
	}
	big := &ProtoMsg{Header: Header{MsgType: FileStat, Properties: map[string]interface{}{"u": strings.Repeat("x", 1<<20)}}}
	if n := big.MemSize(); n < 1<<20 {
		t.Errorf("a 1 MiB prop counts %d bytes", n)
	}
}

// Messages with at most one integer prop take a hand-written encoder; it
// must produce msgpack's bytes exactly.
func TestMarshalOneIntPropMatchesMsgpack(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 70000)
	for _, m := range []*ProtoMsg{
		{Header: Header{Proto: ProtoFileTransfer, MsgType: FileChunk, SessionID: "0f0e0d0c-0b0a-4908-8706-050403020100",
			Properties: map[string]interface{}{PropOffset: int64(1 << 40)}}, Body: body},
		{Header: Header{Proto: ProtoFileTransfer, MsgType: FileChunk, SessionID: "s", Properties: map[string]interface{}{PropOffset: int64(-1)}}},
		{Header: Header{Proto: ProtoFileTransfer, MsgType: FileAck, SessionID: "s", Properties: map[string]interface{}{PropOffset: 0}}},
		{Header: Header{Proto: ProtoFileTransfer, MsgType: FileChunk, Properties: map[string]interface{}{PropOffset: uint8(3)}}, Body: body[:300]},
		{Header: Header{Proto: ProtoControl, MsgType: TypePong}},
		{Header: Header{Proto: ProtoControl, MsgType: TypePong, Properties: map[string]interface{}{"": 5}}},
		{Header: Header{Proto: ProtoControl, MsgType: TypePong, Properties: map[string]interface{}{}}},
		{Header: Header{Proto: ProtoFileTransfer}, Body: body[:70000]},
		{Header: Header{Proto: ProtoPortForward, MsgType: "ack", SessionID: strings.Repeat("s", 300)}},
	} {
		got, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		c := *m
		c.Header.Properties = int64Props(m.Header.Properties)
		if c.Header.Properties == nil {
			c.Header.Properties = m.Header.Properties
		}
		want, err := msgpack.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%+v:\n got %x\nwant %x", m.Header, got[:min(len(got), 80)], want[:min(len(want), 80)])
		}
		if cap(got) > len(got)+64 {
			t.Errorf("%+v: %d bytes in a buffer of %d", m.Header, len(got), cap(got))
		}
	}
}

// A download encodes its chunks with AppendFileChunk into reused
// buffers: msgpack's bytes exactly, within FileChunkOverhead, and
// without touching what precedes it in dst.
func TestAppendFileChunkMatchesMsgpack(t *testing.T) {
	body := bytes.Repeat([]byte{9}, FileChunkSize)
	for _, c := range []struct {
		sid  string
		off  int64
		body []byte
	}{
		{"0f0e0d0c-0b0a-4908-8706-050403020100", 0, body},
		{"0f0e0d0c-0b0a-4908-8706-050403020100", 1 << 40, body[:255]},
		{"s", 4096, body[:256]},
		{"", 7, body[:1]},
		{"s", 52428800, nil}, // the EOF chunk
		{strings.Repeat("s", 300), -1, body},
	} {
		m := &ProtoMsg{Header: Header{Proto: ProtoFileTransfer, MsgType: FileChunk, SessionID: c.sid,
			Properties: map[string]interface{}{PropOffset: c.off}}, Body: c.body}
		want, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("prefix")
		got := AppendFileChunk(append([]byte{}, prefix...), c.sid, c.off, c.body)
		if !bytes.Equal(got, append(prefix, want...)) {
			t.Errorf("sid %q off %d len %d:\n got %x\nwant %x", c.sid, c.off, len(c.body), got[:min(len(got), 90)], append(prefix, want...)[:min(len(want)+6, 90)])
		}
		if over := len(want) - len(c.body); over > FileChunkOverhead(len(c.sid)) {
			t.Errorf("sid %q: overhead %d exceeds the bound %d", c.sid, over, FileChunkOverhead(len(c.sid)))
		}
		buf := make([]byte, 0, FileChunkOverhead(len(c.sid))+len(c.body))
		if n := testing.AllocsPerRun(10, func() { AppendFileChunk(buf[:0], c.sid, c.off, c.body) }); n != 0 {
			t.Errorf("sid %q: %v allocations into a big enough buffer", c.sid, n)
		}
	}
}

// An upload's chunk bodies come from the link's pool and go back once
// written: the decode is the same as without a pool, a released body is
// lent again, and bodies outside the pool's size are plain allocations
// that Release leaves alone.
func TestUnmarshalPooledBodies(t *testing.T) {
	pool := NewBodyPool(2)
	chunk := func(n int) []byte {
		b, err := Marshal(&ProtoMsg{Header: Header{Proto: ProtoFileTransfer, MsgType: FileChunk, SessionID: "s",
			Properties: map[string]interface{}{PropOffset: int64(n)}}, Body: bytes.Repeat([]byte{byte(n)}, n)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, n := range []int{0, 1, BodyPoolSize/2 - 1, BodyPoolSize / 2, BodyPoolSize, BodyPoolSize + 1, 70000} {
		frame := chunk(n)
		want, err := Unmarshal(frame)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalPooled(frame, pool)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Body, want.Body) || got.Header.MsgType != want.Header.MsgType || !sameOffset(got, want) {
			t.Fatalf("len %d: pooled decode differs", n)
		}
		lent := n >= BodyPoolSize/2 && n <= BodyPoolSize
		if (got.pool != nil) != lent {
			t.Errorf("len %d: lent %v, want %v", n, got.pool != nil, lent)
		}
		body := got.Body
		got.Release()
		if got.Body != nil && lent {
			t.Errorf("len %d: Body kept after Release", n)
		}
		if !lent {
			continue
		}
		// The next body of that size reuses the released buffer.
		again, err := UnmarshalPooled(frame, pool)
		if err != nil {
			t.Fatal(err)
		}
		if &again.Body[0] != &body[0] {
			t.Errorf("len %d: a released body was not lent again", n)
		}
		again.Release()
		again.Release() // harmless
	}
	// A message decoded without a pool keeps its body.
	m, err := Unmarshal(chunk(BodyPoolSize))
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	if len(m.Body) != BodyPoolSize {
		t.Error("Release dropped the body of a message decoded without a pool")
	}
	// The session id repeats from frame to frame: decoded once.
	a, _ := UnmarshalPooled(chunk(BodyPoolSize), pool)
	b, _ := UnmarshalPooled(chunk(BodyPoolSize), pool)
	if a.Header.SessionID != "s" || unsafe.StringData(a.Header.SessionID) != unsafe.StringData(b.Header.SessionID) {
		t.Error("the repeated session id was decoded twice")
	}
	// With the pool primed, decoding a chunk allocates no body.
	frame := chunk(BodyPoolSize)
	warm, _ := UnmarshalPooled(frame, pool)
	warm.Release()
	plain := testing.AllocsPerRun(20, func() { Unmarshal(frame) })
	pooled := testing.AllocsPerRun(20, func() {
		m, _ := UnmarshalPooled(frame, pool)
		m.Release()
	})
	if pooled >= plain {
		t.Errorf("pooled decode makes %v allocations, unpooled %v", pooled, plain)
	}
}

func sameOffset(a, b *ProtoMsg) bool {
	x, ok1 := a.Header.IntProp(PropOffset)
	y, ok2 := b.Header.IntProp(PropOffset)
	return x == y && ok1 == ok2
}
