package mockserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tether-agent/tether/internal/proto/portforward"
	"github.com/tether-agent/tether/internal/wire"
)

// ErrPortForwardNotImplemented is mender-cli's answer to a device whose
// accept does not list port forwarding.
var ErrPortForwardNotImplemented = errors.New("port forward not implemented or enabled on the device")

// The read size mender-cli uses; the message types and bodies are the
// device's own (internal/proto/portforward), so that the vocabulary is
// written once.
const (
	pfReadSize = 4096
	// pfQueue is mender-cli's per-connection channel of device messages.
	pfQueue = 20
)

// pfConn is one connection's queue of device messages; gone is closed
// when its reader stops taking them.
type pfConn struct {
	in   chan *wire.ProtoMsg
	gone chan struct{}
}

// PortForward is the user side of port forwarding, speaking as
// mender-cli's port-forward does: a control open without sid, the sid
// taken from the accept; per local connection a fresh connection_id, a
// `new` followed at once by data, one unacknowledged `forward` at a time
// (4 KiB reads), an `ack` after writing each device `forward`, `stop`
// when the local side ends; control pings answered, control close at
// the end. Where mender-cli leaves a local connection hanging (the device
// stopped it or reported an error), PortForward closes it.
type PortForward struct {
	t    *Terminal
	sid  string
	logf func(string, ...any)

	mu        sync.Mutex
	conns     map[string]pfConn
	closers   []io.Closer
	closed    bool
	wg        sync.WaitGroup
	strayAcks atomic.Int64
	done      chan struct{}
}

// OpenPortForward connects to a device and does the control handshake.
// logf receives what mender-cli prints (nil: nothing).
func OpenPortForward(ctx context.Context, baseURL, userJWT, deviceID string, logf func(string, ...any), opts ...TerminalOption) (*PortForward, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t, err := Dial(ctx, baseURL, userJWT, deviceID, opts...)
	if err != nil {
		return nil, err
	}
	body, _ := msgpack.Marshal(&wire.OpenBody{Versions: []int{wire.ProtocolVersion}})
	if err := t.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen}, Body: body}); err != nil {
		_ = t.Close()
		return nil, err
	}
	var m *wire.ProtoMsg
	select {
	case m = <-t.Messages():
	case <-ctx.Done():
		_ = t.Close()
		return nil, fmt.Errorf("port forward handshake: %w", ctx.Err())
	}
	if m == nil {
		_ = t.Close()
		return nil, fmt.Errorf("port forward handshake: connection ended: %w", t.Err())
	}
	if m.Header.MsgType == wire.TypeError {
		var e wire.ErrorBody
		_ = msgpack.Unmarshal(m.Body, &e)
		_ = t.Close()
		return nil, fmt.Errorf("handshake error from client: %s", e.Error)
	}
	var acc wire.AcceptBody
	if m.Header.MsgType != wire.TypeAccept || msgpack.Unmarshal(m.Body, &acc) != nil || !containsProto(acc.Protocols, wire.ProtoPortForward) {
		_ = t.Close()
		return nil, ErrPortForwardNotImplemented
	}
	p := &PortForward{t: t, sid: m.Header.SessionID, logf: logf, conns: make(map[string]pfConn), done: make(chan struct{})}
	go p.dispatch()
	return p, nil
}

func containsProto(list []uint16, p uint16) bool {
	for _, v := range list {
		if v == p {
			return true
		}
	}
	return false
}

// Done is closed when the websocket ends.
func (p *PortForward) Done() <-chan struct{} { return p.done }

// StrayAcks counts device acks with no forward outstanding (mender-cli
// dies of those: it unlocks an unlocked mutex).
func (p *PortForward) StrayAcks() int { return int(p.strayAcks.Load()) }

func (p *PortForward) dispatch() {
	defer close(p.done)
	for m := range p.t.Messages() {
		h := &m.Header
		switch {
		case h.Proto == wire.ProtoControl && h.MsgType == wire.TypePing:
			_ = p.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePong, SessionID: p.sid}})
		case h.Proto == wire.ProtoControl && h.MsgType == wire.TypeError:
			var e wire.ErrorBody
			_ = msgpack.Unmarshal(m.Body, &e)
			p.logf("error from the device: %s", e.Error)
		case h.Proto != wire.ProtoPortForward:
		case h.MsgType == portforward.TypeError:
			var e portforward.ErrorBody
			_ = msgpack.Unmarshal(m.Body, &e)
			p.logf("port-forward error from the device (%s): %s", e.MessageType, e.Error)
			if id := h.StringProp(wire.PropConnectionID); id != "" {
				p.deliver(id, &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: portforward.TypeStop}})
			}
		case h.MsgType == portforward.TypeForward || h.MsgType == portforward.TypeAck || h.MsgType == portforward.TypeStop:
			p.deliver(h.StringProp(wire.PropConnectionID), m)
		}
	}
	p.mu.Lock()
	for id, pc := range p.conns {
		close(pc.in)
		delete(p.conns, id)
	}
	p.closed = true
	p.mu.Unlock()
}

// deliver hands m to its connection; like mender-cli it waits while that
// connection's queue is full.
func (p *PortForward) deliver(id string, m *wire.ProtoMsg) {
	p.mu.Lock()
	pc, ok := p.conns[id]
	p.mu.Unlock()
	if ok {
		select {
		case pc.in <- m:
		case <-pc.gone:
		}
	}
}

func (p *PortForward) send(m *wire.ProtoMsg) error { return p.t.Send(m) }

func (p *PortForward) pfMsg(typ, id string, body []byte) *wire.ProtoMsg {
	return &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: typ, SessionID: p.sid,
		Properties: map[string]interface{}{wire.PropConnectionID: id}}, Body: body}
}

// register adds a connection and its queue; false once the socket ended.
func (p *PortForward) register(id string, c io.Closer) (chan *wire.ProtoMsg, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false
	}
	ch := make(chan *wire.ProtoMsg, pfQueue)
	p.conns[id] = pfConn{in: ch, gone: make(chan struct{})}
	if c != nil {
		p.closers = append(p.closers, c)
	}
	p.wg.Add(1)
	return ch, true
}

func (p *PortForward) unregister(id string) {
	p.mu.Lock()
	if pc, ok := p.conns[id]; ok {
		close(pc.gone)
		delete(p.conns, id)
	}
	p.mu.Unlock()
}

func (p *PortForward) sendNew(id, network, host string, port uint16) error {
	body, _ := msgpack.Marshal(&portforward.NewBody{RemoteHost: &host, RemotePort: &port, Protocol: &network})
	return p.send(p.pfMsg(portforward.TypeNew, id, body))
}

// ServeTCP forwards every connection accepted on l to host:port on the
// device's side, until l is closed or the PortForward ends.
func (p *PortForward) ServeTCP(l net.Listener, host string, port uint16) {
	p.mu.Lock()
	p.closers = append(p.closers, l)
	p.mu.Unlock()
	p.logf("Forwarding from %s -> %s", l.Addr(), net.JoinHostPort(host, fmt.Sprint(port)))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.logf("Handling connection from %s to %s", c.RemoteAddr(), c.LocalAddr())
			id := randomUUID()
			in, ok := p.register(id, c)
			if !ok {
				c.Close()
				return
			}
			go p.tcpConn(c, id, in, host, port)
		}
	}()
}

func (p *PortForward) tcpConn(c net.Conn, id string, in chan *wire.ProtoMsg, host string, port uint16) {
	defer p.wg.Done()
	defer p.unregister(id)
	slot := make(chan struct{}, 1)
	slot <- struct{}{}
	stopped := make(chan struct{}) // the connection is over for the reader
	localDone := make(chan struct{})
	defer func() {
		close(stopped)
		c.Close()
		<-localDone
	}()
	if err := p.sendNew(id, "tcp", host, port); err != nil {
		close(localDone)
		return
	}
	go func() {
		defer close(localDone)
		buf := make([]byte, pfReadSize)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				select {
				case <-slot: // one forward in flight, as mender-cli
				case <-stopped:
					return
				}
				if p.send(p.pfMsg(portforward.TypeForward, id, append([]byte(nil), buf[:n]...))) != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case m, ok := <-in:
			if !ok {
				return
			}
			switch m.Header.MsgType {
			case portforward.TypeForward:
				if _, err := c.Write(m.Body); err == nil {
					_ = p.send(p.pfMsg(portforward.TypeAck, id, nil))
				}
			case portforward.TypeAck:
				select {
				case slot <- struct{}{}:
				default:
					p.strayAcks.Add(1)
				}
			case portforward.TypeStop:
				return
			}
		case <-localDone:
			_ = p.send(p.pfMsg(portforward.TypeStop, id, nil))
			// Wait (a while) for the device's stop, so late messages
			// still have a reader.
			t := time.NewTimer(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case m, ok := <-in:
					if !ok || m.Header.MsgType == portforward.TypeStop {
						return
					}
				case <-t.C:
					return
				}
			}
		}
	}
}

// ServeUDP forwards the datagrams arriving on pc to host:port on the
// device's side over one connection (mender-cli's udp mode); the
// device's datagrams go to the latest local sender.
func (p *PortForward) ServeUDP(pc *net.UDPConn, host string, port uint16) error {
	id := randomUUID()
	in, ok := p.register(id, pc)
	if !ok {
		return errors.New("port forward ended")
	}
	p.logf("Forwarding from udp/%s -> udp/%s", pc.LocalAddr(), net.JoinHostPort(host, fmt.Sprint(port)))
	if err := p.sendNew(id, "udp", host, port); err != nil {
		p.unregister(id)
		p.wg.Done()
		return err
	}
	var src atomic.Pointer[net.UDPAddr]
	slot := make(chan struct{}, 1)
	slot <- struct{}{}
	stopped := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, pfReadSize)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			src.Store(from)
			select {
			case <-slot:
			case <-stopped:
				return
			}
			if p.send(p.pfMsg(portforward.TypeForward, id, append([]byte(nil), buf[:n]...))) != nil {
				return
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		defer p.unregister(id)
		defer close(stopped)
		for m := range in {
			switch m.Header.MsgType {
			case portforward.TypeForward:
				if to := src.Load(); to != nil {
					if _, err := pc.WriteToUDP(m.Body, to); err == nil {
						_ = p.send(p.pfMsg(portforward.TypeAck, id, nil))
					}
				}
			case portforward.TypeAck:
				select {
				case slot <- struct{}{}:
				default:
					p.strayAcks.Add(1)
				}
			case portforward.TypeStop:
				return
			}
		}
	}()
	return nil
}

// Close sends control close, as mender-cli does on exit, and ends every
// listener and connection.
func (p *PortForward) Close() error {
	_ = p.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeClose, SessionID: p.sid}})
	p.mu.Lock()
	closers := p.closers
	p.closers = nil
	p.mu.Unlock()
	for _, c := range closers {
		_ = c.Close()
	}
	err := p.t.Close()
	<-p.done
	p.wg.Wait()
	return err
}
