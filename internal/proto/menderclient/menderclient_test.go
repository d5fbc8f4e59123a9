package menderclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/leakcheck"
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
