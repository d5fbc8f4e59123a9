package itest

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

// termReader consumes a terminal's frames in the background, as a browser
// does: a flood must be read while it comes, whatever the test does.
type termReader struct {
	t       *testing.T
	mu      sync.Mutex
	out     []byte
	changed chan struct{} // closed and replaced on every change
	ended   bool
}

func readTerm(t *testing.T, term *mockserver.Terminal) *termReader {
	r := &termReader{t: t, changed: make(chan struct{})}
	go func() {
		for m := range term.Messages() {
			if m.Header.Proto != wire.ProtoShell || m.Header.MsgType != wire.ShellData {
				continue
			}
			r.mu.Lock()
			r.out = append(r.out, m.Body...)
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.ended = true
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}()
	return r
}

// wait blocks until the output holds substr and returns the output up to
// its end.
func (r *termReader) wait(substr string, timeout time.Duration) []byte {
	r.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	from := 0
	for {
		r.mu.Lock()
		if i := bytes.Index(r.out[from:], []byte(substr)); i >= 0 {
			out := append([]byte(nil), r.out[:from+i+len(substr)]...)
			r.mu.Unlock()
			return out
		}
		if from = len(r.out) - len(substr); from < 0 {
			from = 0
		}
		ended, changed, n := r.ended, r.changed, len(r.out)
		r.mu.Unlock()
		if ended {
			r.t.Fatalf("terminal ended while waiting for %q after %d bytes", substr, n)
		}
		select {
		case <-changed:
		case <-deadline.C:
			r.t.Fatalf("timed out after %v waiting for %q; %d bytes so far", timeout, substr, n)
		}
	}
}

func (r *termReader) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.out)
}

// behindProxy is a prepare function for newEnvWith: the daemon reaches the
// server only through p.
func behindProxy(t *testing.T, p **proxy, bytesPerSec int) func(*env) {
	return func(e *env) {
		*p = newProxy(t, e.addr, bytesPerSec)
		e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), (*p).url())
	}
}

// seqLines is what `seq 1 n` prints, newline-terminated.
func seqLines(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.String()
}

// A server that stops reading for 30 s (within the write timeout): the
// pty readers stop behind their full queues, so the daemon's memory stays
// bounded and it spends (almost) no CPU on output nobody can take, though
// a `yes` is running; afterwards the stream resumes intact, on the same
// connection.
func TestServerStallBoundsDaemon(t *testing.T) {
	t.Parallel()
	const stall = 30 * time.Second
	var p *proxy
	e := newEnvWith(t, map[string]interface{}{
		"Link":     map[string]interface{}{"WriteTimeout": "90s", "ReadTimeout": "120s"},
		"Sessions": map[string]interface{}{"StopGrace": "100ms"},
	}, behindProxy(t, &p, 0))
	e.waitDevice()
	seqT, yesT := e.open("alice@tether.local"), e.open("bob@tether.local")
	seqR, yesR := readTerm(t, seqT), readTerm(t, yesT)
	fmt.Fprint(seqT, "stty -echo; echo ready-$((1+1))\n")
	seqR.wait("ready-2", 15*time.Second)
	fmt.Fprint(yesT, "yes\n")
	yesR.wait("y\r\ny\r\ny\r\n", 15*time.Second)
	rss0 := e.rssAnonKB()

	p.Stall()
	start := time.Now()
	const n = 300000
	fmt.Fprintf(seqT, "seq 1 %d; echo seq-$((2*3))-done\n", n)
	// The first seconds fill the socket buffers and the queues; what
	// counts is what the daemon does once nothing can move.
	settle := time.NewTimer(3 * time.Second)
	<-settle.C
	cpu0 := e.cpuTicks()
	peak := 0
	sample := time.NewTicker(500 * time.Millisecond)
	for time.Since(start) < stall {
		<-sample.C
		if r := e.rssAnonKB(); r > peak {
			peak = r
		}
	}
	sample.Stop()
	cpu := e.cpuTicks() - cpu0
	stalled := time.Since(start)
	p.Resume()
	fmt.Fprint(yesT, "\x03")

	out := seqR.wait("seq-6-done", 90*time.Second)
	clean := strings.ReplaceAll(string(out), "\r", "")
	want := seqLines(n) + "seq-6-done"
	if !strings.HasSuffix(clean, want) || strings.ContainsAny(clean[len(clean)-len(want)-1:][:1], "0123456789") {
		t.Fatalf("seq output damaged across the stall: %d bytes, want the %d-byte sequence then the marker; tail %q",
			len(clean), len(want), clean[max(0, len(clean)-200):])
	}
	after := e.rssAnonKB()
	t.Logf("stall %v: %.2f CPU-s in the last %v; RssAnon %d kB before, peak %d kB during, %d kB after",
		stall, float64(cpu)/100, stalled-3*time.Second, rss0, peak, after)
	if cpu >= 100 {
		t.Errorf("the daemon spent %.2f CPU-s while the server read nothing (want < 1)", float64(cpu)/100)
	}
	// The queues hold at most 4 MiB in all; the rest is slack for the
	// runtime (the binary is built with -race, which doubles heap cost).
	if peak-rss0 > 16<<10 {
		t.Errorf("RssAnon grew by %d kB during the stall (from %d kB): output is not bounded", peak-rss0, rss0)
	}
	if c := e.srv.DeviceConnects(e.deviceID); c != 1 {
		t.Errorf("%d connections: the link dropped during the stall", c)
	}
}

// A server that reads at 100 KB/s, through a throttling proxy: one session
// floods, the link stays up for 30 s (the write timeout counts lack of
// progress, not slowness), and another session's keystroke echo comes
// back within 2 s all along (the kernel holds little, the fair writer
// picks).
func TestSlowServerKeepsLinkAndEcho(t *testing.T) {
	t.Parallel()
	const (
		rate   = 100_000
		period = 30 * time.Second
	)
	var p *proxy
	e := newEnvWith(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "100ms"},
	}, behindProxy(t, &p, rate))
	e.waitDevice()
	floodT, quietT := e.open("alice@tether.local"), e.open("bob@tether.local")
	floodR := readTerm(t, floodT)
	fmt.Fprint(floodT, "yes flood-flood-flood-flood-flood-flood-flood-flood\n")
	floodR.wait("flood-flood\r\nflood-flood", 15*time.Second)
	e.expect(quietT, "$ ")
	base := floodR.size()
	start := time.Now()
	var worst time.Duration
	var lat []time.Duration
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; time.Since(start) < period; i++ {
		<-tick.C
		marker := fmt.Sprintf("k%03dq", i)
		sent := time.Now()
		fmt.Fprintf(quietT, "#%s", marker)
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		_, err := quietT.Expect(ctx, marker)
		cancel()
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		d := time.Since(sent)
		lat = append(lat, d)
		worst = max(worst, d)
		fmt.Fprint(quietT, "\x15") // erase the line (VKILL)
	}
	flooded := floodR.size() - base
	elapsed := time.Since(start)
	t.Logf("%v at %d B/s: flood delivered %d bytes (%.0f B/s); echo latency worst %v over %d keystrokes (%v)",
		elapsed.Round(time.Second), rate, flooded, float64(flooded)/elapsed.Seconds(), worst.Round(time.Millisecond), len(lat), lat)
	if worst > 2*time.Second {
		t.Errorf("a keystroke echo took %v behind the flood (want ≤ 2 s)", worst)
	}
	// The flood really competed for the slow link all along.
	if float64(flooded) < 0.5*rate*elapsed.Seconds() {
		t.Errorf("the flood delivered only %d bytes in %v", flooded, elapsed)
	}
	if c := e.srv.DeviceConnects(e.deviceID); c != 1 {
		t.Errorf("%d connections: the slow server's link dropped", c)
	}
	if strings.Contains(e.log.String(), "link_down") {
		t.Errorf("link dropped under the slow server")
	}
}

// The end of a finished command's output is not lost under back-pressure:
// `seq 1 30000; exit` read through a 100 KB/s server arrives complete
// before the session's stop (the pty is drained before it is closed).
func TestExitOutputCompleteUnderBackPressure(t *testing.T) {
	var p *proxy
	// MaxTotal 256 leaves each session a 16 KiB queue, far less than the
	// 169 KB the command prints: the shell exits while most of it is
	// still in the pty.
	e := newEnvWith(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "100ms", "MaxTotal": 256},
	}, behindProxy(t, &p, 100_000))
	e.waitDevice()
	term := e.open("alice@tether.local")
	e.expect(term, "$ ")
	const n = 30000
	fmt.Fprintf(term, "stty -echo; seq 1 %d; exit\n", n)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	stop, err := term.WaitStop(ctx)
	if err != nil {
		t.Fatalf("no stop: %v", err)
	}
	out := strings.ReplaceAll(term.Output(), "\r", "")
	if want := seqLines(n); !strings.Contains(out, want) {
		t.Fatalf("output lost before the stop (%q): %d bytes, tail %q", stop.Body, len(out), out[max(0, len(out)-120):])
	}
}
