package main

import (
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/tools/bench/procstat"
	"github.com/tether-agent/tether/internal/wire"
)

// serverPingInterval is how often the real server pings a device; the
// bench's server must not wake the daemon more often than that.
const serverPingInterval = 30 * time.Second

// idleWatch is how long a connected, idle daemon is watched.
const idleWatch = 60 * time.Second

// idle measures wakeups and CPU of the connected daemon with no session
// and with 10 idle sessions. Meanwhile the bench answers shell pings as a
// user's terminal does and pings the daemon as the server does.
func (b *bench) idle(pid int) error {
	watch := func(what, target string) error {
		time.Sleep(2 * time.Second)
		got, err := procstat.Watch(pid, idleWatch)
		if err != nil {
			return err
		}
		row("idle "+what+": wakeups / CPU", fmt.Sprintf("%.2f/s / %.1f ms/min", got.WakeupsPerSec,
			float64(got.CPUPerMinute)/float64(time.Millisecond)), target+"; CPU < 10 ms/min")
		return nil
	}
	stop := b.playServer()
	err := watch("connected, no session", "target ≤ 2/s")
	stop() // open reads the frames itself
	if err != nil {
		return err
	}
	var sids []string
	for i := 0; i < 10; i++ {
		sid := fmt.Sprintf("idle-%d", i)
		if err := b.open(sid, ""); err != nil {
			return err
		}
		sids = append(sids, sid)
	}
	b.drain()
	stop = b.playServer()
	err = watch("10 idle sessions", "target ≤ 3/s")
	stop()
	for _, sid := range sids {
		_ = b.stop(sid)
	}
	return err
}

// playServer answers shell pings as a user's terminal does and pings the
// daemon as the server does, until the returned stop is called.
func (b *bench) playServer() (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		ping := time.NewTicker(serverPingInterval)
		defer ping.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ping.C:
				_ = b.c.ws.WriteControl(websocket.PingMessage, []byte("60"), time.Now().Add(5*time.Second))
			case m, ok := <-b.c.in:
				if !ok {
					return
				}
				if m.Header.Proto == wire.ProtoShell && m.Header.MsgType == wire.ShellPing {
					_ = b.c.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellPong,
						SessionID: m.Header.SessionID, Properties: map[string]interface{}{wire.PropStatus: wire.StatusControl}}})
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}
