package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// startFTErrorDevice accepts file transfer and answers stat and put_file
// with an error carrying code.
func startFTErrorDevice(t *testing.T, url, token string, code int) {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.DialContext(testCtx(t), "ws"+strings.TrimPrefix(url, "http")+mockserver.DeviceConnectPath,
		http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			m, err := wire.Unmarshal(data)
			if err != nil {
				continue
			}
			reply := &wire.ProtoMsg{Header: wire.Header{Proto: m.Header.Proto, SessionID: m.Header.SessionID}}
			switch m.Header.MsgType {
			case wire.TypeOpen:
				reply.Header.MsgType = wire.TypeAccept
				reply.Body, _ = wire.EncodeBody(wire.AcceptBody{Version: 1, Protocols: []uint16{wire.ProtoFileTransfer}})
			case wire.FileStat, wire.FilePut:
				reply.Header.MsgType = wire.FileError
				reply.Body, _ = wire.EncodeBody(map[string]interface{}{"err": "no such thing", "code": code})
			default:
				continue
			}
			b, _ := wire.Marshal(reply)
			if conn.WriteMessage(websocket.BinaryMessage, b) != nil {
				return
			}
		}
	}()
}

// cp reports the HTTP status of a failed transfer, which the server takes
// from the device's error code, both ways; a failed download leaves no
// file.
func TestCpPrintsStatus(t *testing.T) {
	s := mockserver.New(mockserver.Options{})
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	startFTErrorDevice(t, url, s.IssueDeviceToken("dev-cp"), 404)
	if _, err := s.WaitDevice(testCtx(t), "dev-cp"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	local := filepath.Join(dir, "f")
	for name, args := range map[string][]string{
		"download": {"cp", "--server", url, "dev-cp:/missing", local},
		"upload":   {"cp", "--server", url, "/dev/null", "dev-cp:/missing/f"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, nil, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "HTTP 404: ") || !strings.Contains(err.Error(), "no such thing") {
			t.Errorf("%s: %v, want HTTP 404 with the device's text", name, err)
		}
	}
	if _, err := os.Stat(local); !os.IsNotExist(err) {
		t.Errorf("failed download left %s: %v", local, err)
	}
}
