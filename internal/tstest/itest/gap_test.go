package itest

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/wire"
)

// waitPing reads the session's frames until the next health ping.
func (s *devShell) waitPing(timeout time.Duration) {
	s.e.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for n := s.pings; s.pings == n; {
		select {
		case m, ok := <-s.frames:
			if !ok {
				s.e.t.Fatal("tap ended while waiting for a ping")
			}
			s.take(m)
		case <-deadline.C:
			s.e.t.Fatalf("no health ping within %v", timeout)
		}
	}
}

// A health ping queued while the link could not take it (the server
// stopped reading, then the connection broke) is sent as soon as the link
// is back, not lost, and the session lives on. A fresh ping would only
// follow a whole interval of link-up time later.
func TestHealthPingInGapSentAfterReconnect(t *testing.T) {
	const interval = 4 * time.Second
	var p *proxy
	e := newEnvWith(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "100ms", "PingInterval": interval.String(), "PongTimeout": "30s"},
	}, behindProxy(t, &p, 0))
	d := e.waitDevice()
	s := e.devShell(d, "gap-1", "alice")
	s.send("stty -echo; echo quiet\n")
	s.expect("quiet")
	s.waitPing(2 * interval)

	// The next ping comes due while the server reads nothing: it waits
	// in the session's queue behind the output that filled the socket.
	p.Stall()
	s.send("seq 1 200000\n")
	hold := time.NewTimer(interval + time.Second)
	<-hold.C
	p.Refuse(true)
	p.Cut()
	gap := time.NewTimer(time.Second)
	<-gap.C
	p.Refuse(false)
	p.Resume()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	nd, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("no reconnect: %v", err)
	}
	back := time.Now()
	s.attach(nd)
	s.waitPing(interval)
	late := time.Since(back)
	t.Logf("the ping queued in the gap arrived %v after the reconnect (interval %v)", late.Round(time.Millisecond), interval)
	if late > interval/3 {
		t.Fatalf("the ping arrived %v after the reconnect: the one queued in the gap was lost", late)
	}
	s.send("echo alive-$((6*7))\n")
	s.expect("alive-42")
	if strings.Contains(e.log.String(), "health check failed") {
		t.Fatal("the health check ended the session")
	}
}

// --trace logs every frame's header (direction, proto, type, session,
// sizes) and never a body or a token.
func TestTraceShowsFrameHeadersOnly(t *testing.T) {
	e := newEnvWith(t, nil, func(e *env) { e.flags = []string{"--trace"} })
	e.waitDevice()
	term := e.open("alice@tether.local")
	secret := fmt.Sprintf("s3cret%d", time.Now().UnixNano())
	fmt.Fprintf(term, "echo %s-$((3+4))\n", secret)
	e.expect(term, secret+"-7")
	sid := term.SID()
	cases := []struct {
		dir, typ string
		body     bool // a body of known size > 0
	}{
		{"frame in", wire.ShellNew, false},
		{"frame out", wire.ShellNew, true},
		{"frame in", wire.ShellData, true},
		{"frame out", wire.ShellData, true},
	}
	res := make([]*regexp.Regexp, len(cases))
	for i, c := range cases {
		res[i] = regexp.MustCompile(`msg="` + c.dir + `" proto=shell type=` + c.typ + ` session_id=` + regexp.QuoteMeta(sid) +
			` props=\d+ body_bytes=(\d+) frame_bytes=(\d+)`)
	}
	// A frame is traced once it is written, so its line may land just
	// after the peer has read it: wait a little for all of them.
	log := e.log.String()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); log = e.log.String() {
		all := true
		for _, re := range res {
			all = all && re.MatchString(log)
		}
		if all {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, c := range cases {
		ms := res[i].FindAllStringSubmatch(log, -1)
		if len(ms) == 0 {
			t.Errorf("no trace of %s %s for session %s", c.dir, c.typ, sid)
			continue
		}
		for _, m := range ms {
			body, _ := strconv.Atoi(m[1])
			frame, _ := strconv.Atoi(m[2])
			if frame <= body || (c.body && body == 0) {
				t.Errorf("%s %s: body %d bytes, frame %d bytes: sizes wrong", c.dir, c.typ, body, frame)
			}
		}
	}
	token, _ := e.auth.Credentials()
	for what, s := range map[string]string{"a keystroke or output body": secret, "the device token": token} {
		if strings.Contains(log, s) {
			t.Errorf("the trace logs %s", what)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", log)
	}
}
