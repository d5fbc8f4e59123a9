package itest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/mockserver"
)

// cliMsg is a ProtoMsg as mender-cli decodes it (go-lib-micro's ws types):
// props into interface{}, so each integer keeps the Go type its msgpack
// form decodes to.
type cliMsg struct {
	Header struct {
		Proto      uint16                 `msgpack:"proto"`
		MsgType    string                 `msgpack:"typ"`
		SessionID  string                 `msgpack:"sid"`
		Properties map[string]interface{} `msgpack:"props"`
	} `msgpack:"hdr"`
	Body []byte `msgpack:"body"`
}

// cliTerminal is a user connection through the mock server's relay that
// reads frames exactly as mender-cli's terminal command does.
type cliTerminal struct {
	t    *testing.T
	conn *websocket.Conn
}

func (e *env) cliTerminal(email string) *cliTerminal {
	e.t.Helper()
	u := "ws" + strings.TrimPrefix(e.url, "http") + mockserver.DeviceConnectMgmtDir + e.deviceID + "/connect"
	conn, _, err := websocket.DefaultDialer.DialContext(e.ctx, u, http.Header{"Authorization": {"Bearer " + e.jwt(email)}})
	if err != nil {
		e.t.Fatalf("connect as %s: %v", email, err)
	}
	e.t.Cleanup(func() { conn.Close() })
	c := &cliTerminal{t: e.t, conn: conn}
	var m cliMsg
	m.Header.Proto, m.Header.MsgType = 1, "new"
	m.Header.Properties = map[string]interface{}{"terminal_width": 80, "terminal_height": 24}
	b, err := msgpack.Marshal(&m)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// next returns the next shell message of type typ.
func (c *cliTerminal) next(typ string, within time.Duration) *cliMsg {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(within))
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", typ, err)
		}
		var m cliMsg
		if err := msgpack.Unmarshal(data, &m); err != nil {
			c.t.Fatalf("decode as mender-cli does: %v (% x)", err, data)
		}
		if m.Header.Proto == 1 && m.Header.MsgType == typ {
			return &m
		}
	}
}

// The integer properties mender-cli asserts as int64 arrive as int64
// through the relay: a refused terminal reads as refused, and the health
// ping's timeout is honoured.
func TestPropsReadAsMenderCLIReadsThem(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"MaxPerUser": 1, "PingInterval": "300ms", "PongTimeout": "10s", "StopGrace": "100ms"},
	})
	e.waitDevice()
	first := e.cliTerminal("alice@tether.local")
	started := first.next("new", 15*time.Second)
	if st, ok := started.Header.Properties["status"].(int64); !ok || st != 1 {
		t.Fatalf("new reply status %#v (%T), want int64 1", started.Header.Properties["status"], started.Header.Properties["status"])
	}
	ping := first.next("ping", 15*time.Second)
	// Every ping announces the pong deadline the device keeps (PongTimeout).
	if to, ok := ping.Header.Properties["timeout"].(int64); !ok || to != 10 {
		t.Fatalf("ping timeout %#v (%T), want int64 10", ping.Header.Properties["timeout"], ping.Header.Properties["timeout"])
	}
	if st, ok := ping.Header.Properties["status"].(int64); !ok || st != 3 {
		t.Fatalf("ping status %#v (%T), want int64 3", ping.Header.Properties["status"], ping.Header.Properties["status"])
	}

	// From here on the first terminal answers pings as mender-cli does, so
	// the device's probe before refusing the second finds it alive.
	first.answerPings()
	second := e.cliTerminal("alice@tether.local")
	refused := second.next("new", 15*time.Second)
	st, ok := refused.Header.Properties["status"].(int64)
	if !ok || st != 2 {
		t.Fatalf("refusal status %#v (%T), want int64 2", refused.Header.Properties["status"], refused.Header.Properties["status"])
	}
	if string(refused.Body) != "user has too many open sessions" {
		t.Fatalf("refusal body %q", refused.Body)
	}
}

// answerPings answers every ping with a pong, as mender-cli does, from a
// goroutine that ends when the connection does; nothing else is read.
func (c *cliTerminal) answerPings() {
	_ = c.conn.SetReadDeadline(time.Time{})
	go func() {
		for {
			_, data, err := c.conn.ReadMessage()
			if err != nil {
				return
			}
			var m cliMsg
			if msgpack.Unmarshal(data, &m) != nil || m.Header.Proto != 1 || m.Header.MsgType != "ping" {
				continue
			}
			var pong cliMsg
			pong.Header.Proto, pong.Header.MsgType, pong.Header.SessionID = 1, "pong", m.Header.SessionID
			b, err := msgpack.Marshal(&pong)
			if err != nil || c.conn.WriteMessage(websocket.BinaryMessage, b) != nil {
				return
			}
		}
	}()
}
