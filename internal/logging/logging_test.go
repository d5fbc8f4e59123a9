package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
		err  bool
	}{
		{"error", slog.LevelError, false},
		{"WARN", slog.LevelWarn, false},
		{"warning", slog.LevelWarn, false},
		{"info", slog.LevelInfo, false},
		{"", slog.LevelInfo, false},
		{" Debug ", slog.LevelDebug, false},
		{"trace", LevelTrace, false},
		{"verbose", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
	if LevelTrace >= slog.LevelDebug {
		t.Fatal("LevelTrace must be below debug")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-socket")
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"level", Options{Level: "loud"}, "unknown log level"},
		{"format", Options{Format: "xml"}, "unknown log format"},
		{"journal mode", Options{Journal: "maybe"}, "unknown journal mode"},
		{"journal on without socket", Options{Journal: JournalOn, JournalSocket: missing}, "is not a socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New(%+v) error = %v, want %q", tt.opts, err, tt.want)
			}
		})
	}
}

func TestStreamFormats(t *testing.T) {
	tests := []struct {
		format string
		check  func(t *testing.T, out string)
	}{
		{"text", func(t *testing.T, out string) {
			for _, w := range []string{"level=TRACE msg=deep", "level=INFO msg=hello session_id=s1 user_id=u1"} {
				if !strings.Contains(out, w) {
					t.Errorf("text output %q lacks %q", out, w)
				}
			}
		}},
		{"json", func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 {
				t.Fatalf("want 2 JSON lines, got %q", out)
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(lines[1]), &rec); err != nil {
				t.Fatal(err)
			}
			if rec["level"] != "INFO" || rec["msg"] != "hello" || rec["session_id"] != "s1" {
				t.Errorf("JSON record %v", rec)
			}
			if !strings.Contains(lines[0], `"level":"TRACE"`) {
				t.Errorf("trace line %q", lines[0])
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New(Options{Level: "trace", Format: tt.format, Writer: &buf, Journal: JournalOff})
			if err != nil {
				t.Fatal(err)
			}
			log.Log(context.Background(), LevelTrace, "deep")
			log.Info("hello", "session_id", "s1", "user_id", "u1")
			tt.check(t, buf.String())
		})
	}
}

func TestStreamLevelFiltering(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(Options{Level: "warn", Writer: &buf, Journal: JournalOff})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("no")
	log.Debug("no")
	log.Warn("yes")
	if out := buf.String(); strings.Contains(out, "msg=no") || !strings.Contains(out, "msg=yes") {
		t.Fatalf("output %q", out)
	}
}
