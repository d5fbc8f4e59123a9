package itest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// Reattach (issue 26): a shell whose user went away without a stop, or
// whose device link dropped, is kept detached and handed back to the same
// user's next terminal, with the output it missed. These tests hold
// against a mock that ends user sessions on a device link drop and tells
// the device nothing when a user leaves (as the real server does) and
// against one that says "user disconnected": they close the user's side
// themselves and never rely on a stop reaching the device.

const (
	alice = "alice@tether.local"
	bob   = "bob@tether.local"
)

// reattachNotice is the line a reattached terminal shows first.
const reattachNotice = "reattached to the shell started at"

var pidRE = regexp.MustCompile(`pid=(\d+)`)

// shellPid asks the shell for its pid.
func shellPid(e *env, term *mockserver.Terminal) int {
	e.t.Helper()
	out := e.run(term, "echo pid=$$")
	all := pidRE.FindAllStringSubmatch(out, -1)
	if all == nil {
		e.t.Fatalf("no pid in %q", out)
	}
	// The last: a reattached terminal replays earlier answers first.
	pid, _ := strconv.Atoi(all[len(all)-1][1])
	return pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// openSized opens a terminal for email with the given size.
func openSized(e *env, email string, cols, rows uint16) *mockserver.Terminal {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	term, err := mockserver.OpenTerminal(ctx, e.url, e.jwt(email), e.deviceID, cols, rows)
	if err != nil {
		e.t.Fatalf("open terminal for %s: %v", email, err)
	}
	e.t.Cleanup(func() { term.Close() })
	return term
}

func reattachEnv(t *testing.T, sessions map[string]interface{}, prepare func(*env)) *env {
	s := map[string]interface{}{"StopGrace": "200ms", "MaxPerUser": 1}
	for k, v := range sessions {
		s[k] = v
	}
	e := newEnvWith(t, map[string]interface{}{"Sessions": s}, prepare)
	e.waitDevice()
	return e
}

// A user whose terminal went away without a stop gets the same shell back
// at once, with MaxPerUser 1: no lock-out. Whether the server tells the
// device (closed) or not (silent: the socket stays, nobody answers), the
// new terminal finds the shell within the probe's grace.
func TestReattachAfterUserLeft(t *testing.T) {
	tests := []struct {
		name   string
		silent bool
	}{
		{"closed", false},
		{"silent", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := reattachEnv(t, nil, nil)
			var opts []mockserver.TerminalOption
			if tt.silent {
				opts = append(opts, mockserver.WithoutAutoPong())
			}
			term := e.open(alice, opts...)
			pid := shellPid(e, term)
			e.run(term, "KEPT=yes-$((40+2))")
			if !tt.silent {
				term.Close()
			}
			start := time.Now()
			again := e.open(alice)
			took := time.Since(start)
			e.expect(again, reattachNotice)
			if got := shellPid(e, again); got != pid {
				t.Fatalf("new terminal got shell %d, want the user's shell %d", got, pid)
			}
			if out := e.run(again, "echo kept=$KEPT"); !strings.Contains(out, "kept=yes-42") {
				t.Fatalf("shell state lost: %q", out)
			}
			t.Logf("reattached after %v", took.Round(time.Millisecond))
			if took > 5*time.Second {
				t.Fatalf("the new terminal waited %v", took)
			}
			if n := e.metric(`tether_sessions_reattached_total{reason="new_terminal"}`); n != 1 {
				t.Fatalf("reattached metric %v", n)
			}
			log := e.log.String()
			if !strings.Contains(log, "event=session_reattach") || !strings.Contains(log, "event=session_detach") {
				t.Fatalf("no detach/reattach journal lines:\n%s", log)
			}
			if tt.silent && !strings.Contains(log, "reason=no_answer") {
				t.Fatal("the silent terminal was not found by the probe")
			}
		})
	}
}

// A terminal that still answers keeps its shell: the same user's second
// terminal is refused (MaxPerUser 1) once the probe is answered, well
// within the grace, and the first one works on.
func TestLiveTerminalKeepsItsShell(t *testing.T) {
	e := reattachEnv(t, map[string]interface{}{"ProbeGrace": "5s"}, nil)
	term := e.open(alice)
	pid := shellPid(e, term)
	start := time.Now()
	_, err := e.tryOpen(alice)
	took := time.Since(start)
	if got := shellError(t, err); got != "user has too many open sessions" {
		t.Fatalf("second terminal: %q", got)
	}
	if took > 4*time.Second {
		t.Fatalf("refused after %v: the live terminal's answer was not taken", took)
	}
	if p := shellPid(e, term); p != pid {
		t.Fatalf("the first terminal now reaches shell %d, want %d", p, pid)
	}
	if strings.Contains(e.log.String(), "event=session_detach") {
		t.Fatal("a live terminal's shell was detached")
	}
}

var tickRE = regexp.MustCompile(`tick (\d+)\r?\n`)

func ticks(s string) []int {
	var out []int
	for _, m := range tickRE.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// A job keeps running across a device link drop; the user's next terminal
// gets the same shell, the ticks printed during the gap first, then the
// live ones, in its own size.
func TestReattachAfterLinkDrop(t *testing.T) {
	e := reattachEnv(t, nil, nil)
	d := e.waitDevice()
	term := e.open(alice)
	pid := shellPid(e, term)
	e.run(term, "stty -echo")
	// In the background, so the shell can be asked for its size later.
	if _, err := io.WriteString(term, "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done &\n"); err != nil {
		t.Fatal(err)
	}
	e.expect(term, "tick 3\r\n")
	seen := ticks(e.expect(term, "tick 5\r\n"))
	last := seen[len(seen)-1]

	d.Close()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	nd, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("no reconnect: %v", err)
	}
	_ = nd
	// The real server has closed the user's socket by now; a lenient one
	// may not have.
	term.Close()
	gap := time.NewTimer(time.Second)
	<-gap.C

	again := openSized(e, alice, 100, 30)
	e.expect(again, reattachNotice)
	replay := e.expect(again, "tick "+strconv.Itoa(last+8)+"\r\n")
	got := ticks(replay)
	if len(got) == 0 || got[0] > last+1 {
		t.Fatalf("ticks after the reattach start at %v, want at most %d (last seen %d): %q", got, last+1, last, replay)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("ticks not contiguous across the gap: %v", got)
		}
	}
	if got := shellPid(e, again); got != pid {
		t.Fatalf("new terminal got shell %d, want %d", got, pid)
	}
	if out := e.run(again, "stty size"); !strings.Contains(out, "30 100") {
		t.Fatalf("the new terminal's size was not applied: %q", out)
	}
	// Live again: more ticks follow.
	e.expect(again, "tick "+strconv.Itoa(last+20)+"\r\n")

	// Another user gets a fresh shell, not alice's.
	other := e.open(bob)
	if p := shellPid(e, other); p == pid {
		t.Fatal("another user got alice's shell")
	}
	if o := other.Output(); strings.Contains(o, reattachNotice) || strings.Contains(o, "tick") {
		t.Fatalf("another user saw alice's output: %q", o)
	}
}

// A detached shell nobody comes back to ends after Sessions.DetachedTimeout.
// Quick health pings find the closed terminal when the server does not say
// the user left.
func TestDetachedTimeoutEndsShell(t *testing.T) {
	e := reattachEnv(t, map[string]interface{}{"DetachedTimeout": "2s", "PingInterval": "500ms", "PongTimeout": "1s"}, nil)
	term := e.open(alice)
	pid := shellPid(e, term)
	term.Close()
	eventually(t, 15*time.Second, "the detached shell to end", func() bool {
		return !alive(pid) && strings.Contains(e.log.String(), "reason=detached_expired")
	})
	again := e.open(alice)
	if p := shellPid(e, again); p == pid {
		t.Fatal("got the expired shell back")
	}
}

// An explicit stop from the user's client ends the shell, as upstream.
func TestExplicitStopEndsShell(t *testing.T) {
	e := reattachEnv(t, nil, nil)
	term := e.open(alice)
	pid := shellPid(e, term)
	if err := term.Stop(); err != nil {
		t.Fatal(err)
	}
	e.waitStop(term)
	eventually(t, 10*time.Second, "the stopped shell to end", func() bool { return !alive(pid) })
	again := e.open(alice)
	if p := shellPid(e, again); p == pid {
		t.Fatal("got the stopped shell back")
	}
	if strings.Contains(again.Output(), reattachNotice) {
		t.Fatal("a fresh shell says it was reattached")
	}
}

// The server's recording cut (stop "session byte limit exceeded") detaches
// the shell instead of ending the job behind a long output.
func TestByteLimitStopDetaches(t *testing.T) {
	const limit = 256 << 10
	e := reattachEnv(t, nil, func(e *env) {
		// The same address and signing key, with a small recording limit.
		e.srv.Close()
		e.srv = mockserver.New(mockserver.Options{SigningKey: signingKey, Users: users, SessionByteLimit: limit,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if _, err := e.srv.Start(e.addr); err != nil {
			t.Fatalf("restart mock server with a byte limit: %v", err)
		}
		srv := e.srv
		t.Cleanup(func() { srv.Close() })
	})
	term := e.open(alice)
	pid := shellPid(e, term)
	if _, err := io.WriteString(term, "seq 1 200000; echo seq-done-$((6*7))\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	_, err := term.CountUntil(ctx, "seq-done-42")
	cancel()
	if err == nil {
		t.Fatal("the mock did not cut the session")
	}
	term.Close()
	eventually(t, 10*time.Second, "the byte-limit detach", func() bool {
		return strings.Contains(e.log.String(), "reason=byte_limit")
	})
	if !alive(pid) {
		t.Fatal("the byte-limit stop ended the shell")
	}
	// The job runs on, its output only kept: wait for its end.
	eventually(t, 30*time.Second, "the job to finish", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		return err == nil && len(strings.TrimSpace(string(b))) == 0
	})
	again := e.open(alice)
	e.expect(again, reattachNotice)
	// The job ran on: its end is in the replay.
	e.expect(again, "seq-done-42")
	if p := shellPid(e, again); p != pid {
		t.Fatalf("got shell %d, want %d", p, pid)
	}
}

// Sessions.IdleCountsOutput: a job that prints but takes no input keeps
// its session past the idle timeout; without it (upstream's rule) only
// input counts and the session expires.
func TestIdleCountsOutput(t *testing.T) {
	tests := []struct {
		name  string
		on    bool
		lives bool
	}{
		{"output counts", true, true},
		{"input only", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := reattachEnv(t, map[string]interface{}{"ExpireAfterIdle": 2, "IdleCountsOutput": tt.on}, nil)
			term := e.open(alice)
			if _, err := io.WriteString(term, "stty -echo; i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo beat $i; sleep 0.5; done\n"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
			defer cancel()
			out, err := term.Expect(ctx, "beat 12")
			if tt.lives && err != nil {
				t.Fatalf("a printing job's session ended: %v (%q)", err, out)
			}
			if !tt.lives {
				if err == nil {
					t.Fatal("the session outlived its idle timeout without input")
				}
				if !strings.Contains(err.Error(), "session expired: idle") {
					t.Fatalf("ended, but not by idle expiry: %v", err)
				}
			}
		})
	}
}

// A server that kept the user's connection across a link drop (a lenient
// one) answers the ping tether sends right after the reconnect: the shell
// is attached again under its own sid, with no notice and nothing lost.
func TestLenientPeerResumesAfterLinkDrop(t *testing.T) {
	e := reattachEnv(t, nil, nil)
	d := e.waitDevice()
	s := e.devShell(d, "lenient-1", "alice")
	s.send("stty -echo; echo quiet\n")
	s.expect("quiet")
	d.Close()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	nd, err := e.srv.WaitReconnect(ctx, d)
	cancel()
	if err != nil {
		t.Fatalf("no reconnect: %v", err)
	}
	s.attach(nd)
	back := time.Now()
	s.waitPing(5 * time.Second) // answered
	t.Logf("probe ping %v after the reconnect", time.Since(back).Round(time.Millisecond))
	eventually(t, 5*time.Second, "the session attached again", func() bool {
		return strings.Contains(e.log.String(), "event=session_attach")
	})
	s.send("echo back-$((1+1))\n")
	if out := s.expect("back-2"); strings.Contains(out, reattachNotice) {
		t.Fatalf("a resumed peer got the reattach notice: %q", out)
	}
	if strings.Contains(e.log.String(), "reason=no_answer") {
		t.Fatal("the answering peer was deemed gone")
	}
}
