package menderclient

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/leakcheck"
	"github.com/tether-agent/tether/internal/wire"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

type chanSender chan *wire.ProtoMsg

func (c chanSender) Send(ctx context.Context, m *wire.ProtoMsg) error {
	select {
	case c <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mender-update")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func answer(t *testing.T, out chanSender) (int64, string, string) {
	t.Helper()
	select {
	case m := <-out:
		st, _ := m.Header.IntProp(wire.PropStatus)
		return st, m.Header.MsgType, string(m.Body)
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	return 0, "", ""
}

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "args")
	ok := script(t, `echo "$@" >> `+rec)
	fail := script(t, "exit 3")
	hang := script(t, "exec sleep 1000")
	for _, tc := range []struct {
		name     string
		binaries []string
		typ      string
		status   int64
		body     string
	}{
		{"check-update", []string{filepath.Join(dir, "absent"), ok}, TypeCheckUpdate, 1, ""},
		{"send-inventory", []string{ok}, TypeSendInventory, 1, ""},
		{"exit status", []string{fail}, TypeCheckUpdate, 2, "exit status 3"},
		{"missing", []string{"/nonexistent/a", "/nonexistent/b"}, TypeCheckUpdate, 2, "Cannot find Mender client binary, tried [/nonexistent/a /nonexistent/b]"},
		{"unknown type", []string{ok}, "reboot", 2, ErrTextUnknownType},
		{"timeout", []string{hang}, TypeCheckUpdate, 2, hang + " check-update: timed out after 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Options{Binaries: tc.binaries, Timeout: 300 * time.Millisecond})
			defer p.Close()
			out := make(chanSender, 4)
			s := p.Open("", out)
			defer s.Close()
			s.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: tc.typ}})
			st, typ, body := answer(t, out)
			if st != tc.status || typ != tc.typ || body != tc.body {
				t.Fatalf("answer status %d type %q body %q, want %d %q %q", st, typ, body, tc.status, tc.typ, tc.body)
			}
		})
	}
	b, _ := os.ReadFile(rec)
	if got := string(b); got != "check-update\nsend-inventory\n" {
		t.Fatalf("recorded arguments %q", got)
	}
}

// A request while the same command runs joins that run: one execution,
// two answers.
func TestRepeatJoins(t *testing.T) {
	dir := t.TempDir()
	rec, release := filepath.Join(dir, "runs"), filepath.Join(dir, "release")
	bin := script(t, `echo run >> `+rec+`; while [ ! -e `+release+` ]; do sleep 0.01; done`)
	p := New(Options{Binaries: []string{bin}})
	defer p.Close()
	out := make(chanSender, 4)
	s := p.Open("", out)
	defer s.Close()
	msg := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: TypeCheckUpdate}}
	s.Handle(msg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(rec); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("command did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Handle(msg)
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if st, _, body := answer(t, out); st != 1 {
			t.Fatalf("answer %d: status %d %q", i, st, body)
		}
	}
	if b, _ := os.ReadFile(rec); strings.Count(string(b), "run") != 1 {
		t.Fatalf("runs: %q", b)
	}
}

// countSender counts answers by status; while gate is open it takes them
// at once, else each Send waits for the gate (a link that is down or a
// server that does not read).
type countSender struct {
	gate  chan struct{}
	mu    sync.Mutex
	byTyp map[string]int
}

func newCountSender(open bool) *countSender {
	s := &countSender{gate: make(chan struct{}), byTyp: map[string]int{}}
	if open {
		close(s.gate)
	}
	return s
}

func (c *countSender) Send(ctx context.Context, m *wire.ProtoMsg) error {
	select {
	case <-c.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	st, _ := m.Header.IntProp(wire.PropStatus)
	c.mu.Lock()
	c.byTyp[fmt.Sprintf("%s/%d", m.Header.MsgType, st)]++
	c.mu.Unlock()
	return nil
}

func (c *countSender) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byTyp[key]
}

// A flood of requests costs neither a goroutine nor memory per request:
// while the command runs (or while answers cannot leave), requests only
// add to what the session owes, and every one still gets its answer.
func TestFloodBounded(t *testing.T) {
	const n = 100_000
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	slow := script(t, `while [ ! -e `+release+` ]; do sleep 0.01; done`)
	for _, tc := range []struct {
		name     string
		binaries []string
		open     bool // the sender takes answers at once
		want     string
	}{
		{"while the command runs", []string{slow}, true, TypeCheckUpdate + "/1"},
		{"no client binary, answers cannot leave", []string{filepath.Join(dir, "absent")}, false, TypeCheckUpdate + "/2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(release)
			p := New(Options{Binaries: tc.binaries})
			defer p.Close()
			out := newCountSender(tc.open)
			s := p.Open("", out)
			defer s.Close()
			before := runtime.NumGoroutine()
			msg := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: TypeCheckUpdate}}
			unknown := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: "reboot"}}
			for i := 0; i < n; i++ {
				s.Handle(msg)
				if i%10 == 0 {
					s.Handle(unknown)
				}
			}
			if g := runtime.NumGoroutine() - before; g > 10 {
				t.Fatalf("%d goroutines more after %d requests", g, n)
			}
			if err := os.WriteFile(release, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if !tc.open {
				close(out.gate)
			}
			deadline := time.Now().Add(30 * time.Second)
			for out.count(tc.want) < n {
				if time.Now().After(deadline) {
					t.Fatalf("%d answers %s of %d", out.count(tc.want), tc.want, n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := out.count("reboot/2"); got < 1 || got > n/10 {
				t.Fatalf("%d refusals of an unknown type", got)
			}
		})
	}
}

// The command runs with the environment it is given, not the daemon's:
// no token, no NOTIFY_SOCKET, a fixed PATH.
func TestChildEnvironment(t *testing.T) {
	dump := filepath.Join(t.TempDir(), "env")
	bin := script(t, `tr '\0' '\n' < /proc/$$/environ > `+dump)
	t.Setenv("TETHER_AUTH_TOKEN", "secret-token")
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("PATH", "/tmp/evil:"+os.Getenv("PATH"))
	t.Setenv("TZ", "Europe/Oslo")
	t.Setenv("LANG", "")
	os.Unsetenv("LANG") // restored by t.Setenv
	p := New(Options{Binaries: []string{bin}})
	defer p.Close()
	out := make(chanSender, 1)
	s := p.Open("", out)
	defer s.Close()
	s.Handle(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: TypeCheckUpdate}})
	if st, _, body := answer(t, out); st != 1 {
		t.Fatalf("status %d %q", st, body)
	}
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	want := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nTZ=Europe/Oslo\n"
	if string(b) != want {
		t.Fatalf("the command's environment:\n%s\nwant:\n%s", b, want)
	}
}

// A request that comes once the run has ended, while its answers are
// still leaving, is not answered with that old outcome: it gets a run of
// its own, which it shares with the others that came meanwhile.
func TestRequestAfterRunGetsNextRun(t *testing.T) {
	rec := filepath.Join(t.TempDir(), "runs")
	bin := script(t, `echo run >> `+rec)
	p := New(Options{Binaries: []string{bin}})
	defer p.Close()
	out := newCountSender(false)
	s := p.Open("", out)
	defer s.Close()
	msg := &wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: TypeSendInventory}}
	s.Handle(msg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The run has ended once nothing runs and it left its record.
		p.mu.Lock()
		running := p.runs[TypeSendInventory] != nil
		p.mu.Unlock()
		if b, _ := os.ReadFile(rec); len(b) > 0 && !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first run did not end")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Handle(msg)
	s.Handle(msg)
	close(out.gate)
	for out.count(TypeSendInventory+"/1") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d answers of 3", out.count(TypeSendInventory+"/1"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b, _ := os.ReadFile(rec); strings.Count(string(b), "run") != 2 {
		t.Fatalf("runs: %q, want two", b)
	}
}
