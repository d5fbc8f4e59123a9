package auth_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/auth"
)

func staticOpts(file string) auth.StaticOptions {
	return auth.StaticOptions{ServerURL: "https://s.example", TokenFile: file, PollInterval: 20 * time.Millisecond}
}

func TestStaticFixedToken(t *testing.T) {
	tests := []struct {
		name string
		opts auth.StaticOptions
		want auth.Credentials
	}{
		{"token", auth.StaticOptions{Token: secretPrefix + "t", ServerURL: "https://s.example"},
			auth.Credentials{Token: secretPrefix + "t", ServerURL: "https://s.example"}},
		{"trailing newline", auth.StaticOptions{Token: secretPrefix + "t\n", ServerURL: "https://s.example"},
			auth.Credentials{Token: secretPrefix + "t", ServerURL: "https://s.example"}},
		{"no url", auth.StaticOptions{Token: secretPrefix + "t"},
			auth.Credentials{Token: secretPrefix + "t"}},
		{"nothing", auth.StaticOptions{}, auth.Credentials{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, _ := newLogger(t)
			src := auth.NewStatic(log, tc.opts)
			runSource(t, src)
			expectNext(t, src, tc.want)
			src.Refresh()
			expectNone(t, src, 50*time.Millisecond)
		})
	}
}

func TestStaticTokenAndFileExclusive(t *testing.T) {
	log, _ := newLogger(t)
	src := auth.NewStatic(log, auth.StaticOptions{Token: "x", TokenFile: "/y"})
	if err := src.Run(context.Background()); err == nil {
		t.Fatal("Run accepted both a token and a token file")
	}
}

func TestStaticTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	write := func(content string) {
		t.Helper()
		// Write and rename, as a well-behaved token writer does, so the
		// poller never sees half a file.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	url := "https://s.example"
	write(secretPrefix + "1\n")

	log, logs := newLogger(t)
	src := auth.NewStatic(log, staticOpts(file))
	runSource(t, src)
	expectNext(t, src, auth.Credentials{Token: secretPrefix + "1", ServerURL: url})

	write(secretPrefix + "2 \r\n")
	expectNext(t, src, auth.Credentials{Token: secretPrefix + "2", ServerURL: url})

	// Rewriting the same token is not a change.
	write(secretPrefix + "2")
	expectNone(t, src, 100*time.Millisecond)

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	expectNext(t, src, auth.Credentials{ServerURL: url})
	time.Sleep(100 * time.Millisecond) // several polls of a missing file
	if n := logs.count("token file unusable"); n != 1 {
		t.Fatalf("missing file logged %d times, want 1", n)
	}

	write(secretPrefix + "3")
	expectNext(t, src, auth.Credentials{Token: secretPrefix + "3", ServerURL: url})
	if logs.count("token file usable again") != 1 {
		t.Fatal("recovery not logged")
	}

	write("  \n")
	expectNext(t, src, auth.Credentials{ServerURL: url})
}

func TestStaticTokenFileRefreshRereads(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(secretPrefix+"1"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	opts := staticOpts(file)
	opts.PollInterval = time.Hour
	src := auth.NewStatic(log, opts)
	runSource(t, src)
	expectNext(t, src, auth.Credentials{Token: secretPrefix + "1", ServerURL: opts.ServerURL})
	if err := os.WriteFile(file, []byte(secretPrefix+"2"), 0o600); err != nil {
		t.Fatal(err)
	}
	src.Refresh()
	expectNext(t, src, auth.Credentials{Token: secretPrefix + "2", ServerURL: opts.ServerURL})
}

func TestStaticNoGoroutineLeak(t *testing.T) {
	check := goroutineBaseline(t)
	log, _ := newLogger(t)
	src := auth.NewStatic(log, staticOpts(filepath.Join(t.TempDir(), "missing")))
	stop := runSource(t, src)
	expectNext(t, src, auth.Credentials{ServerURL: "https://s.example"})
	stop()
	check()
}

// A write to the token file, or its replacement by a rename, is noticed
// without polling (inotify on its directory).
func TestStaticTokenFileWatched(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(secretPrefix+"1"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	opts := staticOpts(file)
	opts.PollInterval = time.Hour
	src := auth.NewStatic(log, opts)
	runSource(t, src)
	expectNext(t, src, auth.Credentials{Token: secretPrefix + "1", ServerURL: opts.ServerURL})
	tests := []struct {
		name  string
		token string
		write func(string) error
	}{
		{"written in place", secretPrefix + "2", func(tok string) error { return os.WriteFile(file, []byte(tok), 0o600) }},
		{"replaced by a rename", secretPrefix + "3", func(tok string) error {
			tmp := filepath.Join(dir, ".token.new")
			if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
				return err
			}
			return os.Rename(tmp, file)
		}},
	}
	for _, tt := range tests {
		if err := tt.write(tt.token); err != nil {
			t.Fatal(err)
		}
		expectNext(t, src, auth.Credentials{Token: tt.token, ServerURL: opts.ServerURL})
	}
}
