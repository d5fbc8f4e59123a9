package logging

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// entry is one journal entry as the fake journald parsed it.
type entry struct {
	fields map[string][]string
	raw    []byte
	memfd  bool
}

func (e entry) get(t *testing.T, name string) string {
	t.Helper()
	v, ok := e.fields[name]
	if !ok {
		t.Fatalf("entry has no %s field; fields: %v", name, e.names())
	}
	if len(v) != 1 {
		t.Fatalf("field %s appears %d times: %q", name, len(v), v)
	}
	return v[0]
}

func (e entry) names() []string {
	var ns []string
	for n := range e.fields {
		ns = append(ns, n)
	}
	return ns
}

// fakeJournald listens like journald's native socket and parses what
// arrives, including entries passed as a memfd.
type fakeJournald struct {
	path    string
	conn    *net.UnixConn
	entries chan entry
	errs    chan error
	done    chan struct{}
}

func startJournald(t *testing.T, path string) *fakeJournald {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("fake journald: %v", err)
	}
	f := &fakeJournald{path: path, conn: conn, entries: make(chan entry, 100), errs: make(chan error, 100), done: make(chan struct{})}
	go f.serve()
	t.Cleanup(f.stop)
	return f
}

// newJournald starts a fake journald on a fresh socket path.
func newJournald(t *testing.T) *fakeJournald {
	t.Helper()
	dir, err := os.MkdirTemp("", "jd") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startJournald(t, filepath.Join(dir, "socket"))
}

func (f *fakeJournald) stop() {
	select {
	case <-f.done:
		return
	default:
	}
	f.conn.Close()
	<-f.done
	os.Remove(f.path)
}

func (f *fakeJournald) serve() {
	defer close(f.done)
	buf := make([]byte, 4<<20)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := f.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		e, err := decodeDatagram(buf[:n], oob[:oobn])
		if err != nil {
			f.errs <- err
			continue
		}
		f.entries <- e
	}
}

func decodeDatagram(data, oob []byte) (entry, error) {
	var e entry
	if len(oob) > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob)
		if err != nil || len(msgs) != 1 {
			return e, fmt.Errorf("control messages: %v (%d)", err, len(msgs))
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return e, fmt.Errorf("unix rights: %v (%d fds)", err, len(fds))
		}
		if len(data) != 0 {
			return e, fmt.Errorf("memfd datagram carries %d payload bytes", len(data))
		}
		f := os.NewFile(uintptr(fds[0]), "memfd")
		defer f.Close()
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil {
			return e, fmt.Errorf("F_GET_SEALS: %w", err)
		}
		want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
		if seals&want != want {
			return e, fmt.Errorf("memfd seals %#x, want %#x", seals, want)
		}
		if data, err = io.ReadAll(io.NewSectionReader(f, 0, 1<<40)); err != nil {
			return e, err
		}
		e.memfd = true
	}
	e.raw = append([]byte(nil), data...)
	fields, err := parseNative(data)
	e.fields = fields
	return e, err
}

// parseNative decodes the native protocol: NAME=value\n, or
// NAME\n<le64 length><value>\n.
func parseNative(b []byte) (map[string][]string, error) {
	fields := map[string][]string{}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i <= 0 {
			return nil, fmt.Errorf("bad field at %q", b[:min(len(b), 40)])
		}
		name := string(b[:i])
		for _, c := range name {
			if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') || name[0] == '_' || len(name) > 64 {
				return nil, fmt.Errorf("invalid field name %q", name)
			}
		}
		var value string
		if b[i] == '=' {
			j := bytes.IndexByte(b[i+1:], '\n')
			if j < 0 {
				return nil, fmt.Errorf("field %s not terminated", name)
			}
			value, b = string(b[i+1:i+1+j]), b[i+1+j+1:]
		} else {
			b = b[i+1:]
			if len(b) < 8 {
				return nil, fmt.Errorf("field %s: short length", name)
			}
			n := binary.LittleEndian.Uint64(b)
			b = b[8:]
			if uint64(len(b)) < n+1 || b[n] != '\n' {
				return nil, fmt.Errorf("field %s: bad binary value", name)
			}
			value, b = string(b[:n]), b[n+1:]
		}
		fields[name] = append(fields[name], value)
	}
	return fields, nil
}

func (f *fakeJournald) next(t *testing.T) entry {
	t.Helper()
	select {
	case e := <-f.entries:
		return e
	case err := <-f.errs:
		t.Fatalf("fake journald: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no journal entry within 5s")
	}
	return entry{}
}

func (f *fakeJournald) none(t *testing.T) {
	t.Helper()
	select {
	case e := <-f.entries:
		t.Fatalf("unexpected journal entry %v", e.fields)
	case err := <-f.errs:
		t.Fatalf("fake journald: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

func journalLogger(t *testing.T, jd *fakeJournald, level string, w io.Writer) *slog.Logger {
	t.Helper()
	log, err := New(Options{Level: level, Journal: JournalOn, JournalSocket: jd.path, Writer: w})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return log
}

// TestJournalSessionAudit logs what the daemon logs when a session opens
// and closes and checks the fields an audit query relies on.
func TestJournalSessionAudit(t *testing.T) {
	jd := newJournald(t)
	var stderr syncbuf.Buffer
	log := journalLogger(t, jd, "info", &stderr)

	log.Info("session opened", KeyEvent, EventSessionOpen, KeySessionID, "0b5e6f4e-1", KeyUserID, "5a1e-user", KeyProto, "shell")
	log.Warn("session closed", KeyEvent, EventSessionClose, KeySessionID, "0b5e6f4e-1", KeyUserID, "5a1e-user",
		KeyReason, "idle_expired", KeyDuration, 90*time.Second+500*time.Millisecond)

	open := jd.next(t)
	for name, want := range map[string]string{
		"MESSAGE":           "session opened",
		"PRIORITY":          "6",
		"SYSLOG_IDENTIFIER": "tether",
		"TETHER_EVENT":      "session_open",
		"TETHER_SESSION_ID": "0b5e6f4e-1",
		"TETHER_USER_ID":    "5a1e-user",
		"TETHER_PROTO":      "shell",
	} {
		if got := open.get(t, name); got != want {
			t.Errorf("open: %s = %q, want %q", name, got, want)
		}
	}
	if f := open.get(t, "CODE_FILE"); !strings.HasSuffix(f, "journal_linux_test.go") {
		t.Errorf("CODE_FILE = %q", f)
	}
	if l, err := strconv.Atoi(open.get(t, "CODE_LINE")); err != nil || l <= 0 {
		t.Errorf("CODE_LINE = %q", open.get(t, "CODE_LINE"))
	}
	if f := open.get(t, "CODE_FUNC"); !strings.HasSuffix(f, ".TestJournalSessionAudit") {
		t.Errorf("CODE_FUNC = %q", f)
	}
	if len(open.fields) != 10 {
		t.Errorf("open entry has fields %v, want exactly 10", open.names())
	}

	closed := jd.next(t)
	for name, want := range map[string]string{
		"MESSAGE":           "session closed",
		"PRIORITY":          "4",
		"TETHER_EVENT":      "session_close",
		"TETHER_SESSION_ID": "0b5e6f4e-1",
		"TETHER_USER_ID":    "5a1e-user",
		"TETHER_REASON":     "idle_expired",
		"TETHER_DURATION":   "1m30.5s",
	} {
		if got := closed.get(t, name); got != want {
			t.Errorf("close: %s = %q, want %q", name, got, want)
		}
	}
	if s := stderr.String(); s != "" {
		t.Errorf("stderr got output although the journal works: %q", s)
	}
}

func TestJournalMultiline(t *testing.T) {
	jd := newJournald(t)
	log := journalLogger(t, jd, "info", io.Discard)
	log.Error("two\nlines", "detail", "a\nb\n", "plain", "x=y")
	e := jd.next(t)
	if got := e.get(t, "MESSAGE"); got != "two\nlines" {
		t.Errorf("MESSAGE = %q", got)
	}
	if got := e.get(t, "TETHER_DETAIL"); got != "a\nb\n" {
		t.Errorf("TETHER_DETAIL = %q", got)
	}
	if got := e.get(t, "TETHER_PLAIN"); got != "x=y" {
		t.Errorf("TETHER_PLAIN = %q", got)
	}
	if got := e.get(t, "PRIORITY"); got != "3" {
		t.Errorf("PRIORITY = %q", got)
	}
	if !bytes.Contains(e.raw, []byte("MESSAGE\n\x09\x00\x00\x00\x00\x00\x00\x00two\nlines\n")) {
		t.Errorf("MESSAGE not in the binary form: %q", e.raw)
	}
	if e.memfd {
		t.Error("small entry went through a memfd")
	}
}

func TestJournalHugeMessageUsesMemfd(t *testing.T) {
	jd := newJournald(t)
	var stderr syncbuf.Buffer
	log := journalLogger(t, jd, "info", &stderr)
	huge := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, beyond any datagram
	log.Info(huge, "event", "big")
	e := jd.next(t)
	if !e.memfd {
		t.Fatal("a 1 MiB entry did not go through a memfd")
	}
	if got := e.get(t, "MESSAGE"); got != huge {
		t.Fatalf("MESSAGE has %d bytes, want %d", len(got), len(huge))
	}
	if got := e.get(t, "TETHER_EVENT"); got != "big" {
		t.Fatalf("TETHER_EVENT = %q", got)
	}
	if s := stderr.String(); s != "" {
		t.Fatalf("fell back to stderr: %.200q", s)
	}
}

type lazy struct{}

func (lazy) LogValue() slog.Value { return slog.StringValue("resolved") }

type textish struct{}

func (textish) MarshalText() ([]byte, error) { return []byte("as-text"), nil }

func TestJournalAttrsAndGroups(t *testing.T) {
	jd := newJournald(t)
	log := journalLogger(t, jd, "info", io.Discard)
	l := log.With("session_id", "s1").WithGroup("req").With("user_id", "u1").WithGroup("")
	l.Info("m",
		"size", 3,
		slog.Group("peer", "addr", "127.0.0.1", slog.Group("tls", "ok", true)),
		slog.Group("empty"),
		slog.Group("", "inlined", 1.5),
		"link-state.now", "up",
		"lazy", lazy{},
		"text", textish{},
		"err", errors.New("boom"),
		"at", time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
		"long_"+strings.Repeat("x", 80), "v",
	)
	e := jd.next(t)
	want := map[string]string{
		"TETHER_SESSION_ID":         "s1",
		"TETHER_REQ_USER_ID":        "u1",
		"TETHER_REQ_SIZE":           "3",
		"TETHER_REQ_PEER_ADDR":      "127.0.0.1",
		"TETHER_REQ_PEER_TLS_OK":    "true",
		"TETHER_REQ_INLINED":        "1.5",
		"TETHER_REQ_LINK_STATE_NOW": "up",
		"TETHER_REQ_LAZY":           "resolved",
		"TETHER_REQ_TEXT":           "as-text",
		"TETHER_REQ_ERR":            "boom",
		"TETHER_REQ_AT":             "2024-05-06T07:08:09Z",
		("TETHER_REQ_LONG_" + strings.Repeat("X", 80))[:64]: "v",
	}
	for name, w := range want {
		if got := e.get(t, name); got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
	for _, n := range e.names() {
		if strings.Contains(n, "EMPTY") {
			t.Errorf("empty group produced field %s", n)
		}
	}
	// The parent logger is unaffected by the derived one.
	log.Info("plain")
	if p := jd.next(t); len(p.fields) != 6 {
		t.Errorf("parent entry fields %v, want only the 6 standard ones", p.names())
	}
}

func TestJournalLevels(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		level string
		want  []string // PRIORITY of the entries that get through, in order
	}{
		{"error", []string{"3"}},
		{"warn", []string{"3", "4"}},
		{"info", []string{"3", "4", "6"}},
		{"", []string{"3", "4", "6"}},
		{"debug", []string{"3", "4", "6", "7"}},
		{"trace", []string{"3", "4", "6", "7", "7"}},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			jd := newJournald(t)
			log := journalLogger(t, jd, tt.level, io.Discard)
			for _, l := range []slog.Level{slog.LevelError, slog.LevelWarn, slog.LevelInfo, slog.LevelDebug, LevelTrace} {
				log.Log(ctx, l, "m")
			}
			for i, w := range tt.want {
				if got := jd.next(t).get(t, "PRIORITY"); got != w {
					t.Fatalf("entry %d PRIORITY = %s, want %s", i, got, w)
				}
			}
			jd.none(t)
		})
	}
}

func TestJournalLevelVar(t *testing.T) {
	jd := newJournald(t)
	var lv slog.LevelVar
	log, err := New(Options{Level: "info", LevelVar: &lv, Journal: JournalOn, JournalSocket: jd.path})
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	jd.none(t)
	lv.Set(slog.LevelDebug)
	log.Debug("shown")
	if got := jd.next(t).get(t, "MESSAGE"); got != "shown" {
		t.Fatalf("MESSAGE = %q", got)
	}
}

// TestJournalFallback: while journald is gone each record is written to
// the stream writer instead, after one note; when it returns, records go
// to the journal again.
func TestJournalFallback(t *testing.T) {
	jd := newJournald(t)
	var stderr syncbuf.Buffer
	log := journalLogger(t, jd, "info", &stderr)
	log.Info("first")
	jd.next(t)

	jd.stop()
	log.Info("second", "session_id", "s2")
	log.Info("third")
	out := stderr.String()
	if strings.Count(out, "journal write failed") != 1 {
		t.Fatalf("want one failure note, got %q", out)
	}
	for _, w := range []string{"msg=second session_id=s2", "msg=third"} {
		if !strings.Contains(out, w) {
			t.Fatalf("fallback output %q lacks %q", out, w)
		}
	}

	jd2 := startJournald(t, jd.path)
	log.Info("fourth")
	if got := jd2.next(t).get(t, "MESSAGE"); got != "fourth" {
		t.Fatalf("after journald returned got %q", got)
	}
	if strings.Contains(stderr.String(), "fourth") {
		t.Fatal("record written to stderr although the journal is back")
	}
	jd2.stop()
	log.Info("fifth")
	if n := strings.Count(stderr.String(), "journal write failed"); n != 2 {
		t.Fatalf("want a second note for the second failure, got %d", n)
	}
}

// TestJournalNeverBlocks: a journald that stops reading makes records go
// to the fallback after the write timeout instead of blocking the caller.
func TestJournalNeverBlocks(t *testing.T) {
	dir, err := os.MkdirTemp("", "jd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "socket")
	stuck, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	var stderr syncbuf.Buffer
	stream := slog.NewTextHandler(&stderr, nil)
	h, err := newJournalHandler(path, "tether", slog.LevelInfo, stream)
	if err != nil {
		t.Fatal(err)
	}
	h.j.timeout = 20 * time.Millisecond
	log := slog.New(h)

	qlen := 10
	if b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			qlen = n
		}
	}
	total := qlen + 1 + 5
	start := time.Now()
	for i := 0; i < total; i++ {
		log.Info("record", "i", i)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("logging %d records to a stuck journald took %v", total, el)
	}
	out := stderr.String()
	if !strings.Contains(out, "journal write failed") || !strings.Contains(out, fmt.Sprintf("i=%d", total-1)) {
		t.Fatalf("last record not in the fallback output: %q", out)
	}
	if !strings.Contains(out, "i/o timeout") {
		t.Fatalf("fallback note does not say the write timed out: %q", out)
	}
}

func TestJournalAutoDetection(t *testing.T) {
	jd := newJournald(t)
	var st syscall.Stat_t
	if err := syscall.Fstat(syscall.Stderr, &st); err != nil {
		t.Fatal(err)
	}
	stream := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	var buf bytes.Buffer
	tests := []struct {
		name        string
		opts        Options
		journalEnv  string
		wantJournal bool
	}{
		{"stderr is journald's stream", Options{JournalSocket: jd.path}, stream, true},
		{"explicit auto", Options{Journal: "AUTO", JournalSocket: jd.path}, stream, true},
		{"explicit stderr writer", Options{JournalSocket: jd.path, Writer: os.Stderr}, stream, true},
		{"no socket", Options{JournalSocket: filepath.Join(t.TempDir(), "none")}, stream, false},
		{"a writer of the caller's choosing", Options{JournalSocket: jd.path, Writer: &buf}, stream, false},
		{"off", Options{Journal: JournalOff, JournalSocket: jd.path}, stream, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.journalEnv)
			log, err := New(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, isJournal := log.Handler().(*journalHandler)
			if isJournal != tt.wantJournal {
				t.Fatalf("journal handler = %v, want %v", isJournal, tt.wantJournal)
			}
			if isJournal {
				log.Info("auto", "event", "link_up")
				if got := jd.next(t).get(t, "TETHER_EVENT"); got != "link_up" {
					t.Fatalf("TETHER_EVENT = %q", got)
				}
			}
		})
	}
}

func TestIdentifier(t *testing.T) {
	jd := newJournald(t)
	log, err := New(Options{Journal: JournalOn, JournalSocket: jd.path, Identifier: "tether-test"})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x")
	if got := jd.next(t).get(t, "SYSLOG_IDENTIFIER"); got != "tether-test" {
		t.Fatalf("SYSLOG_IDENTIFIER = %q", got)
	}
}
