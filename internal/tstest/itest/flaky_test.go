package itest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// devShell drives a shell session straight over the device connection, as
// the server does, so that the session can outlive any one connection.
type devShell struct {
	e      *env
	sid    string
	d      *mockserver.Device
	frames <-chan *wire.ProtoMsg
	cancel func()
	out    strings.Builder
	pings  int
}

func (e *env) devShell(d *mockserver.Device, sid, user string) *devShell {
	s := &devShell{e: e, sid: sid}
	s.attach(d)
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: user, wire.PropTerminalWidth: 80, wire.PropTerminalHeight: 24}}}
	if err := d.Send(m); err != nil {
		e.t.Fatal(err)
	}
	s.expect("Shell started")
	return s
}

// attach follows the session onto the device's current connection; the
// frames come from a tap that spans connections.
func (s *devShell) attach(d *mockserver.Device) {
	if s.frames == nil {
		s.frames, s.cancel = s.e.srv.Tap(s.e.deviceID)
		s.e.t.Cleanup(s.cancel)
	}
	s.d = d
}

func (s *devShell) send(text string) {
	m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellData, SessionID: s.sid}, Body: []byte(text)}
	if err := s.d.Send(m); err != nil {
		s.e.t.Fatal(err)
	}
}

// expect reads the session's frames until the output holds want; "Shell
// started" matches the reply to new. Pings are answered.
func (s *devShell) expect(want string) string {
	s.e.t.Helper()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for {
		if i := strings.Index(s.out.String(), want); i >= 0 {
			all := s.out.String()
			s.out.Reset()
			s.out.WriteString(all[i+len(want):])
			return all[:i+len(want)]
		}
		select {
		case m, ok := <-s.frames:
			if !ok {
				s.e.t.Fatalf("connection ended while waiting for %q; output %q", want, s.out.String())
			}
			s.take(m)
		case <-timeout.C:
			s.e.t.Fatalf("timed out waiting for %q; output %q", want, s.out.String())
		}
	}
}

// take records one frame of the session; pings are answered.
func (s *devShell) take(m *wire.ProtoMsg) {
	if m.Header.SessionID != s.sid || m.Header.Proto != wire.ProtoShell {
		return
	}
	switch m.Header.MsgType {
	case wire.ShellData:
		s.out.Write(m.Body)
	case wire.ShellNew:
		s.out.WriteString(string(m.Body))
	case wire.ShellPing:
		s.pings++
		_ = s.d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellPong, SessionID: s.sid}})
	case wire.ShellStop:
		s.e.t.Errorf("session stopped: %q", m.Body)
	}
}

// A session survives 20 drops in a row; the output of a command typed
// just before each drop (produced while the link is down) arrives after
// the reconnect, in order, once; the session answers afterwards.
func TestSessionSurvivesFlappingLink(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "100ms", "PingInterval": "300ms", "PongTimeout": "2s"},
	})
	d := e.waitDevice()
	s := e.devShell(d, "flaky-1", "alice")
	s.send("stty -echo; echo quiet\n")
	s.expect("quiet")
	const drops = 20
	var got strings.Builder
	for i := 0; i < drops; i++ {
		// Printed after a pause, so it usually falls into the gap while
		// the daemon reconnects (its backoff is 0–500 ms).
		s.send(fmt.Sprintf("sleep 0.1; echo out-%02d-a; echo out-%02d-b\n", i, i))
		ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
		d.Close()
		nd, err := e.srv.WaitReconnect(ctx, d)
		cancel()
		if err != nil {
			t.Fatalf("drop %d: no reconnect: %v", i, err)
		}
		d = nd
		s.attach(d)
		// The next drop only after this output arrived: a server closing
		// the socket under frames in flight loses them, which no device
		// can prevent; what the device still holds it must deliver.
		got.WriteString(s.expect(fmt.Sprintf("out-%02d-b", i)))
	}
	all := got.String()
	// Output lines, prompts stripped; the echo of a typed command is a
	// line of its own that matches none.
	var lines []string
	for _, l := range strings.Split(all, "\r\n") {
		lines = append(lines, strings.TrimPrefix(l, "$ "))
	}
	at := func(w string) (first, n int) {
		first = -1
		for i, l := range lines {
			if l == w {
				if first < 0 {
					first = i
				}
				n++
			}
		}
		return first, n
	}
	for i := 0; i < drops; i++ {
		for _, part := range []string{"a", "b"} {
			w := fmt.Sprintf("out-%02d-%s", i, part)
			if _, n := at(w); n != 1 {
				t.Fatalf("%s arrived %d times; output %q", w, n, all)
			}
		}
		a, _ := at(fmt.Sprintf("out-%02d-a", i))
		b, _ := at(fmt.Sprintf("out-%02d-b", i))
		if a > b {
			t.Fatalf("output of command %d out of order: %q", i, all)
		}
	}
	s.send("echo after-$((6*7))\n")
	s.expect("after-42")
	if strings.Contains(e.log.String(), "health check failed") {
		t.Fatal("the health check ended a session during the flapping")
	}
}

// threads reads the daemon's thread count.
func (e *env) threads() int {
	e.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.daemon.Process.Pid))
	if err != nil {
		e.t.Fatalf("daemon status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				e.t.Fatalf("Threads line %q: %v", l, err)
			}
			return n
		}
	}
	e.t.Fatal("no Threads line in the daemon's status")
	return 0
}

// No thread per session: the thread count stays flat with 300 sessions
// open and after they stop.
func TestThreadsFlatWithManySessions(t *testing.T) {
	const n = 300
	// Memory is measured on a plain build (see plainTether).
	e := newEnvBin(t, plainTether(t), map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "100ms", "MaxTotal": 1024, "MaxPerUser": 1024},
	})
	d := e.waitDevice()
	t0, rss0 := e.threads(), e.rssAnonKB()
	frames, cancel := d.Subscribe()
	defer cancel()
	for i := 0; i < n; i++ {
		m := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew, SessionID: fmt.Sprintf("many-%03d", i),
			Properties: map[string]interface{}{wire.PropUserID: "alice", wire.PropTerminalWidth: 80, wire.PropTerminalHeight: 24}}}
		if err := d.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	started := 0
	timeout := time.NewTimer(90 * time.Second)
	defer timeout.Stop()
	for started < n {
		select {
		case m, ok := <-frames:
			if !ok {
				t.Fatal("connection ended")
			}
			if m.Header.MsgType == wire.ShellNew {
				if st, _ := m.Header.IntProp(wire.PropStatus); st != wire.StatusNormal {
					t.Fatalf("session %s refused: %q", m.Header.SessionID, m.Body)
				}
				started++
			}
		case <-timeout.C:
			t.Fatalf("%d of %d sessions started", started, n)
		}
	}
	open, rssOpen := e.threads(), e.rssAnonKB()
	for i := 0; i < n; i++ {
		_ = d.Send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellStop, SessionID: fmt.Sprintf("many-%03d", i)}})
	}
	eventually(t, 60*time.Second, "sessions torn down", func() bool {
		live, zombies := e.children()
		return len(live) == 0 && len(zombies) == 0
	})
	after := e.threads()
	// The daemon gives memory back shortly after the last session ended
	// (without that, 300 sessions leave about 10 MB where 2 MB was idle).
	var rssAfter int
	settle := time.Now()
	for rssAfter = e.rssAnonKB(); rssAfter > rss0+6<<10 && time.Since(settle) < 10*time.Second; rssAfter = e.rssAnonKB() {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("threads: %d idle, %d with %d sessions, %d after they stopped", t0, open, n, after)
	t.Logf("RssAnon: %d kB idle, %d kB with %d sessions, %d kB after they stopped", rss0, rssOpen, n, rssAfter)
	if open > t0+30 || after > t0+30 {
		t.Fatalf("threads %d idle, %d with %d sessions, %d after: not flat", t0, open, n, after)
	}
	if rssAfter > rss0+6<<10 {
		t.Fatalf("RssAnon %d kB idle, %d kB with %d sessions, still %d kB 10 s after they stopped", rss0, rssOpen, n, rssAfter)
	}
}
