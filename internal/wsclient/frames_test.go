package wsclient

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestFragmentedMessages: a raw server splits messages into continuation
// frames, with empty fragments and control frames between them.
func TestFragmentedMessages(t *testing.T) {
	big := pattern(200000)
	var stream []byte
	add := func(b0 byte, p []byte) { stream = append(stream, frame(b0, p)...) }
	add(TextMessage, []byte("hel"))     // FIN clear
	add(PingMessage|0x80, []byte("p1")) // a ping between fragments
	add(continuationFrame, nil)         // empty fragment
	add(continuationFrame|0x80, []byte("lo"))
	add(BinaryMessage, big[:70000])
	add(PongMessage|0x80, []byte("p2"))
	add(continuationFrame, big[70000:140000])
	add(continuationFrame|0x80, big[140000:])
	add(BinaryMessage|0x80, nil) // an empty message
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		c.Write(stream)
		readFrame(br) // the pong to p1
		readFrame(br) // the close
	})
	c := dial(t, &Dialer{}, url, nil)
	var pings, pongs []string
	c.SetPingHandler(func(b []byte) error { pings = append(pings, string(b)); return nil })
	c.SetPongHandler(func(b []byte) error { pongs = append(pongs, string(b)); return nil })
	for _, want := range []struct {
		typ int
		p   []byte
	}{{TextMessage, []byte("hello")}, {BinaryMessage, big}, {BinaryMessage, []byte{}}} {
		typ, p, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ != want.typ || !bytes.Equal(p, want.p) {
			t.Fatalf("got type %d, %d bytes; want type %d, %d bytes", typ, len(p), want.typ, len(want.p))
		}
	}
	if strings.Join(pings, ",") != "p1" || strings.Join(pongs, ",") != "p2" {
		t.Errorf("pings %v, pongs %v", pings, pongs)
	}
	c.WriteControl(CloseMessage, FormatCloseMessage(CloseNormalClosure, ""), time.Now().Add(time.Second))
}

// TestProtocolViolations: what RFC 6455 forbids a server ends the read
// with a clear error, and the client tells the server why in a close
// frame with the right code.
func TestProtocolViolations(t *testing.T) {
	long := make([]byte, 126)
	tests := []struct {
		name     string
		send     []byte
		limit    int64
		wantErr  string
		wantCode int
	}{
		{"masked frame", []byte{0x82, 0x81, 1, 2, 3, 4, 'x'}, 0, "masked frame", CloseProtocolError},
		{"reserved bit", frame(0x80|0x40|BinaryMessage, []byte("x")), 0, "reserved bits", CloseProtocolError},
		{"unknown opcode", frame(0x80|3, nil), 0, "unknown opcode 3", CloseProtocolError},
		{"unknown control opcode", frame(0x80|0xb, nil), 0, "unknown opcode 11", CloseProtocolError},
		{"long ping", frame(0x80|PingMessage, long), 0, "control frame of 126 bytes", CloseProtocolError},
		{"fragmented ping", frame(PingMessage, nil), 0, "fragmented control frame", CloseProtocolError},
		{"stray continuation", frame(0x80|continuationFrame, []byte("x")), 0, "continuation frame without a message", CloseProtocolError},
		{"message inside a message", append(frame(TextMessage, []byte("a")), frame(0x80|TextMessage, []byte("b"))...), 0,
			"new message before the last frame", CloseProtocolError},
		{"huge length", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, 0, "out of range", CloseProtocolError},
		{"close of one byte", frame(0x80|CloseMessage, []byte{3}), 0, "close frame of 1 byte", CloseProtocolError},
		{"reserved close code", frame(0x80|CloseMessage, []byte{0x03, 0xee}), 0, "invalid close code 1006", CloseProtocolError},
		{"close reason not UTF-8", frame(0x80|CloseMessage, []byte{0x03, 0xe8, 0xff}), 0, "not UTF-8", CloseInvalidFramePayloadData},
		{"over the read limit", frame(0x80|BinaryMessage, make([]byte, 1001)), 1000, "read limit", CloseMessageTooBig},
		{"over the read limit in fragments", append(frame(BinaryMessage, make([]byte, 600)), frame(0x80, make([]byte, 600))...), 1000,
			"read limit", CloseMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan clientFrame, 1)
			url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
				c.Write(tt.send)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				f, err := readFrame(br)
				if err != nil {
					t.Errorf("server: no close frame: %v", err)
				}
				got <- f
			})
			c := dial(t, &Dialer{}, url, nil)
			c.SetReadLimit(tt.limit)
			c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a frame let through would leave it waiting
			var err error
			for err == nil {
				_, _, err = c.ReadMessage()
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("read: %v, want an error about %q", err, tt.wantErr)
			}
			if tt.limit > 0 && !errors.Is(err, ErrReadLimit) {
				t.Errorf("read: %v is not ErrReadLimit", err)
			}
			f := <-got
			if !f.masked || f.closeCode() != tt.wantCode {
				t.Fatalf("the server got frame %#x (masked %v) code %d, want a masked close %d", f.b0, f.masked, f.closeCode(), tt.wantCode)
			}
			if err := c.WriteMessage(BinaryMessage, nil); !errors.Is(err, ErrCloseSent) {
				t.Errorf("write after the protocol error: %v", err)
			}
		})
	}
}

// TestCloseWithoutCode: an empty close frame is 1005, echoed empty.
func TestCloseWithoutCode(t *testing.T) {
	got := make(chan clientFrame, 1)
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		c.Write(frame(0x80|CloseMessage, nil))
		f, _ := readFrame(br)
		got <- f
	})
	c := dial(t, &Dialer{}, url, nil)
	_, _, err := c.NextReader()
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseNoStatusReceived {
		t.Fatalf("read: %v, want close 1005", err)
	}
	if f := <-got; f.b0 != 0x80|CloseMessage || len(f.payload) != 0 {
		t.Fatalf("echo %#x %v, want an empty close", f.b0, f.payload)
	}
}

// TestWireFormat: the client's frames as RFC 6455 §5.2 lays them out:
// FIN set, masked with a different key each time, the length in its
// shortest form.
func TestWireFormat(t *testing.T) {
	sizes := []int{0, 125, 126, 65535, 65536}
	got := make(chan []clientFrame, 1)
	keys := make(chan [][4]byte, 1)
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		var fs []clientFrame
		var ks [][4]byte
		for range sizes {
			// The key as sent: the length field decides where it sits.
			hdr, _ := br.Peek(14)
			off := 2
			switch hdr[1] & 0x7f {
			case 126:
				off = 4
			case 127:
				off = 10
			}
			var k [4]byte
			copy(k[:], hdr[off:])
			ks = append(ks, k)
			f, err := readFrame(br)
			if err != nil {
				t.Errorf("server: %v", err)
				break
			}
			fs = append(fs, f)
		}
		got <- fs
		keys <- ks
	})
	c := dial(t, &Dialer{WriteBufferSize: 1000}, url, nil)
	for _, n := range sizes {
		if err := c.WriteMessage(BinaryMessage, pattern(n)); err != nil {
			t.Fatal(err)
		}
	}
	fs, ks := <-got, <-keys
	seen := map[[4]byte]bool{}
	for i, f := range fs {
		if f.b0 != 0x80|BinaryMessage || !f.masked || !bytes.Equal(f.payload, pattern(sizes[i])) {
			t.Errorf("frame %d: %#x masked %v, %d bytes", i, f.b0, f.masked, len(f.payload))
		}
		seen[ks[i]] = true
	}
	if len(seen) != len(sizes) {
		t.Errorf("%d distinct mask keys in %d frames", len(seen), len(sizes))
	}
}

func TestMaskBytes(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, pos := range []int{0, 1, 2, 3, 5} {
		for _, n := range []int{0, 1, 7, 8, 9, 33} {
			b := pattern(n)
			maskBytes(key, pos, b)
			for i := range b {
				if want := pattern(n)[i] ^ key[(pos+i)%4]; b[i] != want {
					t.Fatalf("pos %d n %d: byte %d is %#x, want %#x", pos, n, i, b[i], want)
				}
			}
		}
	}
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], 0)
	b := pattern(20)
	maskBytes(k, 3, b)
	if !bytes.Equal(b, pattern(20)) {
		t.Fatal("a zero key changed the bytes")
	}
}
