package wire

import (
	"runtime"
	"testing"
)

// FuzzFileTransferBodies: whatever a peer sends as a stat/get/put/error
// body decodes or fails cleanly, and what decodes re-encodes.
func FuzzFileTransferBodies(f *testing.F) {
	p := "/data/a.txt"
	for _, v := range []interface{}{FilePathBody{Path: &p}, UploadBody{Path: &p}, FileErrorBody{Error: "x", MessageType: "stat"}, FileInfoBody{Path: &p}} {
		b, err := EncodeBody(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x81, 0xa4, 'p', 'a', 't', 'h', 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []interface{}{&FilePathBody{}, &UploadBody{}, &FileErrorBody{}, &FileInfoBody{}} {
			if DecodeBody(b, v) == nil {
				if _, err := EncodeBody(v); err != nil {
					t.Fatalf("re-encode %T: %v", v, err)
				}
			}
		}
	})
}

// A body whose string headers claim gigabytes is refused without
// allocating them (msgpack's decoder would take the claim at its word).
func TestDecodeBodyRefusesClaimedLengths(t *testing.T) {
	bombs := [][]byte{
		[]byte("\x81\xdb\xa4path\xabdata/a.txt"),       // map key str32 claiming 2.7 GB
		[]byte("\x81\xa4path\xdb\xff\xff\xff\xf0abc"),  // value str32 claiming 4 GB
		[]byte("\x81\xa4path\xc6\xff\xff\xff\xf0abc"),  // bin32
		[]byte("\x81\xa4path\xdd\xff\xff\xff\xf0\xc0"), // array32
		[]byte("\xdf\xff\xff\xff\xf0\xa1a\xc0"),        // map32
	}
	for _, b := range bombs {
		for _, v := range []interface{}{&FilePathBody{}, &UploadBody{}, &FileErrorBody{}, &FileInfoBody{}, &OpenBody{}, &ErrorBody{}} {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := DecodeBody(b, v)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Errorf("%q into %T decoded", b, v)
			}
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
				t.Errorf("%q into %T allocated %d bytes", b, v, grown)
			}
		}
	}
}
