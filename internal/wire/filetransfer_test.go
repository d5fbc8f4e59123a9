package wire

import "testing"

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
