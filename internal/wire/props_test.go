package wire

import (
	"bytes"
	"runtime"
	"testing"

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
