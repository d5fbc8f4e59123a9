package wsclient

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/gorilla/websocket"
)

// The hot paths beside gorilla's client, against the same gorilla server:
// the link must not get slower for the smaller binary.
// go test -run XXX -bench . ./internal/wsclient/
func BenchmarkWrite(b *testing.B) {
	for _, size := range []int{4 << 10, 32 << 10} {
		srv := gorillaServer(b, websocket.Upgrader{ReadBufferSize: 64 << 10}, func(c *websocket.Conn, _ *http.Request) {
			for {
				_, r, err := c.NextReader()
				if err != nil {
					return
				}
				io.Copy(io.Discard, r)
			}
		})
		srv.Start()
		msg := pattern(size)
		b.Run("wsclient/"+byteSize(size), func(b *testing.B) {
			c, err := (&Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}).Dial(context.Background(), wsURL(srv.URL), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := c.WriteMessage(BinaryMessage, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("gorilla/"+byteSize(size), func(b *testing.B) {
			c, _, err := (&websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}).Dial(wsURL(srv.URL), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRead(b *testing.B) {
	for _, size := range []int{4 << 10, 32 << 10} {
		msg := pattern(size)
		srv := gorillaServer(b, websocket.Upgrader{WriteBufferSize: 64 << 10}, func(c *websocket.Conn, _ *http.Request) {
			for {
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					return
				}
			}
		})
		srv.Start()
		buf := make([]byte, size+1)
		b.Run("wsclient/"+byteSize(size), func(b *testing.B) {
			c, err := (&Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}).Dial(context.Background(), wsURL(srv.URL), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_, r, err := c.NextReader()
				if err != nil {
					b.Fatal(err)
				}
				io.ReadFull(r, buf)
			}
		})
		b.Run("gorilla/"+byteSize(size), func(b *testing.B) {
			c, _, err := (&websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}).Dial(wsURL(srv.URL), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_, r, err := c.NextReader()
				if err != nil {
					b.Fatal(err)
				}
				io.ReadFull(r, buf)
			}
		})
	}
}

func byteSize(n int) string { return strconv.Itoa(n>>10) + "KiB" }
