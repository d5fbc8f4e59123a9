package session

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/wire"
)

// recordingProto is a protocol that records what the router asks of it.
type recordingProto struct {
	n      uint16
	mu     sync.Mutex
	opened []string
	closed map[string]int
	got    map[string][]string // sid → message types handled
}

func newRecordingProto(n uint16) *recordingProto {
	return &recordingProto{n: n, closed: map[string]int{}, got: map[string][]string{}}
}

func (p *recordingProto) Number() uint16 { return p.n }
func (p *recordingProto) Close()         {}
func (p *recordingProto) Open(sid string, _ proto.Sender) proto.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opened = append(p.opened, sid)
	return &recordingSession{p: p, sid: sid}
}

func (p *recordingProto) closes(sid string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed[sid]
}

type recordingSession struct {
	p   *recordingProto
	sid string
}

func (s *recordingSession) Handle(m *wire.ProtoMsg) {
	s.p.mu.Lock()
	s.p.got[s.sid] = append(s.p.got[s.sid], m.Header.MsgType)
	s.p.mu.Unlock()
}

func (s *recordingSession) Close() {
	s.p.mu.Lock()
	s.p.closed[s.sid]++
	s.p.mu.Unlock()
}

// wireOut captures what the router sends: the mux is up and writes
// through to it.
type wireOut struct {
	mu  sync.Mutex
	out []*wire.ProtoMsg
}

func (w *wireOut) write(b []byte) error {
	m, err := wire.Unmarshal(b)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.out = append(w.out, m)
	w.mu.Unlock()
	return nil
}

// take drains the frames the writer would send and returns everything
// sent so far, emptying the record.
func (w *wireOut) take(m *mux.Mux) []*wire.ProtoMsg {
	for f := m.Next(); f != nil; f = m.Next() {
		m.Written(w.write(f))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.out
	w.out = nil
	return out
}

func controlRouter(t *testing.T, protos ...proto.Protocol) (*Router, *mux.Mux, *wireOut) {
	t.Helper()
	m := mux.New(nil)
	w := &wireOut{}
	m.Up(w.write)
	r := New(Options{Protocols: protos, MaxPerUser: 1, MaxTotal: 16}, m)
	t.Cleanup(func() { r.Shutdown(context.Background(), 0) })
	return r, m, w
}

func ctrl(typ, sid string, body interface{}) *wire.ProtoMsg {
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: typ, SessionID: sid}}
	switch b := body.(type) {
	case nil:
	case []byte:
		m.Body = b
	default:
		enc, err := wire.EncodeBody(b)
		if err != nil {
			panic(err)
		}
		m.Body = enc
	}
	return m
}

// The control protocol answers as upstream does (docs/protocol.md §3).
func TestControlProtocol(t *testing.T) {
	tests := []struct {
		name string
		in   *wire.ProtoMsg
		// want is the one reply: its type and, for an error, its body.
		wantType string
		wantErr  wire.ErrorBody
	}{
		{"open with version 1", ctrl(wire.TypeOpen, "s1", wire.OpenBody{Versions: []int{2, 1}}), wire.TypeAccept, wire.ErrorBody{}},
		{"open without version 1", ctrl(wire.TypeOpen, "s1", wire.OpenBody{Versions: []int{2}}), wire.TypeError,
			wire.ErrorBody{Error: "handshake rejected: require version 1", Close: true}},
		{"open with an undecodable body", ctrl(wire.TypeOpen, "s1", []byte{0xc1}), wire.TypeError, wire.ErrorBody{}},
		{"accept of another version", ctrl(wire.TypeAccept, "s1", wire.AcceptBody{Version: 3}), wire.TypeError,
			wire.ErrorBody{Error: "unsupported protocol version 3: require version 1", Close: true}},
		{"ping", ctrl(wire.TypePing, "s1", nil), wire.TypePong, wire.ErrorBody{}},
		{"unknown type", ctrl("bogus", "s1", nil), wire.TypeError,
			wire.ErrorBody{Error: "session: control type message not understood: 'bogus'"}},
		{"no handler", &wire.ProtoMsg{Header: wire.Header{Proto: 7, MsgType: "x", SessionID: "s1",
			Properties: map[string]interface{}{wire.PropMsgID: "m-1"}}}, wire.TypeError,
			wire.ErrorBody{Error: "no handler registered for protocol: 0x0007", MessageProto: 7, MessageType: "x", MessageID: "m-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, m, w := controlRouter(t, newRecordingProto(wire.ProtoFileTransfer))
			r.HandleMessage(tt.in)
			out := w.take(m)
			if len(out) != 1 {
				t.Fatalf("%d replies, want 1: %+v", len(out), out)
			}
			got := out[0]
			if got.Header.Proto != wire.ProtoControl || got.Header.MsgType != tt.wantType || got.Header.SessionID != "s1" {
				t.Fatalf("reply %+v, want control %s on s1", got.Header, tt.wantType)
			}
			switch tt.wantType {
			case wire.TypeAccept:
				var acc wire.AcceptBody
				if err := wire.DecodeBody(got.Body, &acc); err != nil || acc.Version != 1 || fmt.Sprint(acc.Protocols) != "[2]" {
					t.Fatalf("accept %+v %v, want version 1 protocols [2]", acc, err)
				}
			case wire.TypeError:
				var eb wire.ErrorBody
				if tt.wantErr == (wire.ErrorBody{}) { // only the text's start is upstream's
					if err := wire.DecodeBody(got.Body, &eb); err != nil || !strings.HasPrefix(eb.Error, "failed to decode handshake request: ") || !eb.Close {
						t.Fatalf("error body %+v %v", eb, err)
					}
					return
				}
				if err := wire.DecodeBody(got.Body, &eb); err != nil || eb != tt.wantErr {
					t.Fatalf("error body %+v %v, want %+v", eb, err, tt.wantErr)
				}
			}
		})
	}
}

// A router session's protocols end with it: on close, on an error that
// closes, and when the bounded table forgets its stalest entry.
func TestControlSessionEndsItsProtocols(t *testing.T) {
	p := newRecordingProto(wire.ProtoFileTransfer)
	r, m, w := controlRouter(t, p)
	msg := func(sid string) *wire.ProtoMsg {
		return &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: "stat", SessionID: sid}}
	}
	r.HandleMessage(msg("a"))
	r.HandleMessage(msg("b"))
	r.HandleMessage(ctrl(wire.TypeClose, "a", nil))
	r.HandleMessage(ctrl(wire.TypeError, "b", wire.ErrorBody{Error: "gone", Close: true}))
	eventuallyTrue(t, func() bool { return p.closes("a") == 1 && p.closes("b") == 1 })
	if out := w.take(m); len(out) != 0 {
		t.Fatalf("close and error got replies: %+v", out)
	}
	// A closed session's sid opens a new one, which sees only new traffic.
	r.HandleMessage(msg("a"))
	p.mu.Lock()
	opened := fmt.Sprint(p.opened)
	p.mu.Unlock()
	if opened != "[a b a]" {
		t.Fatalf("opened %s", opened)
	}

	// The table is bounded: the stalest session goes, and its protocols
	// are closed, so garbage sids cannot grow memory.
	for i := 0; i < maxCtrlSessions; i++ {
		r.HandleMessage(msg(fmt.Sprintf("g%d", i)))
	}
	r.mu.Lock()
	n := len(r.ctrl)
	r.mu.Unlock()
	if n > maxCtrlSessions {
		t.Fatalf("%d control sessions, bound %d", n, maxCtrlSessions)
	}
	eventuallyTrue(t, func() bool { return p.closes("a") == 2 })
	// An id longer than any real one gets no entry at all.
	long := make([]byte, maxIDLen+1)
	for i := range long {
		long[i] = 'x'
	}
	r.HandleMessage(msg(string(long)))
	p.mu.Lock()
	_, kept := p.got[string(long)]
	p.mu.Unlock()
	if kept {
		t.Fatal("a session id over the bound reached a protocol")
	}
}

func eventuallyTrue(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond) // closes run on their own goroutines
	}
	t.Fatal("condition not reached")
}

// Messages without a sid (the server sends Mender client commands so) get
// protocol sessions of their own; like every other router session they
// end when the link drops, and later sid-less messages get fresh ones.
func TestSidlessSessionsEndOnLinkDown(t *testing.T) {
	p := newRecordingProto(wire.ProtoPortForward)
	r, _, _ := controlRouter(t, p)
	msg := func(typ string) *wire.ProtoMsg {
		return &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: typ}}
	}
	r.HandleMessage(msg("new"))
	r.LinkDown()
	eventuallyTrue(t, func() bool { return p.closes("") == 1 })
	r.HandleMessage(msg("forward"))
	p.mu.Lock()
	opened, got := len(p.opened), fmt.Sprint(p.got[""])
	p.mu.Unlock()
	if opened != 2 || got != "[new forward]" {
		t.Fatalf("after the link drop: %d sessions opened, handled %s; want a fresh session for the forward", opened, got)
	}
	r.Shutdown(context.Background(), 0)
	eventuallyTrue(t, func() bool { return p.closes("") == 2 })
	r.LinkDown()
	r.HandleMessage(msg("late"))
	p.mu.Lock()
	opened, got = len(p.opened), fmt.Sprint(p.got[""])
	p.mu.Unlock()
	if opened != 2 || got != "[new forward]" {
		t.Fatalf("after shutdown: %d sessions opened, handled %s", opened, got)
	}
}
