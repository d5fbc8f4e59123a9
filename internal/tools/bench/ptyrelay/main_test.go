package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// The relay carries every byte of a command's pty output to the sink.
func TestRelayCarriesAllOutput(t *testing.T) {
	got := make(chan int64, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		var n int64
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				got <- n
				return
			}
			n += int64(len(b))
		}
	}))
	defer srv.Close()
	const size = 3 << 20
	if err := relay("ws"+strings.TrimPrefix(srv.URL, "http"), []string{"head", "-c", "3145728", "/dev/zero"}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != size {
		t.Fatalf("sink got %d bytes, want %d", n, size)
	}
}
