package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/tstest/leakcheck"
	"github.com/tether-agent/tether/internal/wire"
)

// TestMain fails the run if goroutines started by the tests outlive them.
func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestDeviceURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://127.0.0.1:43671", "ws://127.0.0.1:43671/api/devices/v1/deviceconnect/connect"},
		{"https://hosted.mender.io", "wss://hosted.mender.io/api/devices/v1/deviceconnect/connect"},
		{"https://example.com/mender/", "wss://example.com/mender/api/devices/v1/deviceconnect/connect"},
		{"https://u:p@example.com/x?q=1#f", "wss://example.com/x/api/devices/v1/deviceconnect/connect"},
		{"wss://example.com", "wss://example.com/api/devices/v1/deviceconnect/connect"},
	}
	for _, tt := range tests {
		got, err := DeviceURL(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("DeviceURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "not a url", "http://", "::"} {
		if _, err := DeviceURL(bad); err == nil {
			t.Errorf("DeviceURL(%q) accepted", bad)
		}
	}
}

type nopHandler struct{}

func (nopHandler) HandleMessage(*wire.ProtoMsg)      {}
func (nopHandler) HandleMalformed(*wire.DecodeError) {}
func (nopHandler) LinkDown()                         {}
func (nopHandler) TokenCleared()                     {}

// tokenServer accepts device websockets and reports each connection's
// bearer token, in order, holding the connection open until it ends.
func tokenServer(t *testing.T) (url string, tokens <-chan string) {
	ch := make(chan string, 16)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		ch <- strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

// The same credentials announced again (a flap A, "", A that the auth
// source coalesced into A) must not drop the working connection.
func TestEqualCredentialsKeepTheConnection(t *testing.T) {
	url, tokens := tokenServer(t)
	m := mux.New(nil)
	l, err := New(Options{PingInterval: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Second,
		BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond}, nopHandler{}, m)
	if err != nil {
		t.Fatal(err)
	}
	creds := make(chan auth.Credentials) // unbuffered: each send is taken before the next
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx, creds) }()
	defer func() { cancel(); <-done }()

	a := auth.Credentials{Token: "A", ServerURL: url}
	b := auth.Credentials{Token: "B", ServerURL: url}
	creds <- a
	var got []string
	next := func() string {
		select {
		case tok := <-tokens:
			got = append(got, tok)
			return tok
		case <-time.After(10 * time.Second):
			t.Fatalf("no connection; tokens so far %q", got)
			return ""
		}
	}
	next()
	creds <- a // equal: nothing to do
	creds <- b // different: reconnect with it
	for next() != "B" {
	}
	if len(got) != 2 || got[0] != "A" {
		t.Fatalf("connections with tokens %q, want [A B]: equal credentials reconnected", got)
	}
}

// The write deadline counts from the last progress, not from the start of
// a write: a slow reader that keeps taking bytes never trips it, a stalled
// one does.
func TestWriteTimeoutMeansNoProgress(t *testing.T) {
	tests := []struct {
		name     string
		readGap  time.Duration // between the reader's 16 KiB reads
		wantFail bool
	}{
		{"slow but live", 10 * time.Millisecond, false},
		{"stalled", time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A small receive window, set before the handshake, so bytes
			// back up in the sender as they would behind a slow server.
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
			}}
			ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			stop := make(chan struct{})
			readerDone := make(chan struct{})
			go func() {
				defer close(readerDone)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 16<<10)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-time.After(tt.readGap):
					}
				}
			}()
			defer func() { close(stop); <-readerDone }()
			c, err := dialTCP(500*time.Millisecond, "", nil)(context.Background(), "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Far more than the 500 ms timeout's worth at the reader's pace
			// when it is live.
			start := time.Now()
			_, err = c.Write(make([]byte, 2<<20))
			took := time.Since(start)
			if gotFail := err != nil; gotFail != tt.wantFail {
				t.Fatalf("write error %v after %v, want failure %v", err, took, tt.wantFail)
			}
			if !tt.wantFail && took < time.Second {
				t.Fatalf("write took only %v: the reader was not slow enough to prove anything", took)
			}
			if tt.wantFail && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("stalled write failed with %v, want a deadline", err)
			}
			c.Close()
		})
	}
}

// The first dial after start waits a random time below StartJitter, so
// links started in the same instant reach the server spread over it;
// without it they dial at once.
func TestStartJitterSpreadsTheFirstDial(t *testing.T) {
	tests := []struct {
		name          string
		jitter        time.Duration
		minSpread     time.Duration // earliest to latest first dial, at least
		latest        time.Duration // every first dial within, from start
		wantAllAtOnce bool
	}{
		{"start jitter 1 s: spread over it", time.Second, 300 * time.Millisecond, time.Second + 500*time.Millisecond, false},
		{"no start jitter: all at once", 0, 0, 500 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const links = 16
			url, tokens := tokenServer(t)
			ctx, cancel := context.WithCancel(context.Background())
			var done []chan struct{}
			defer func() {
				cancel()
				for _, d := range done {
					<-d
				}
			}()
			start := time.Now()
			for i := 0; i < links; i++ {
				l, err := New(Options{PingInterval: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Second,
					BackoffBase: time.Second, BackoffMax: time.Minute, StartJitter: tt.jitter}, nopHandler{}, mux.New(nil))
				if err != nil {
					t.Fatal(err)
				}
				creds := make(chan auth.Credentials, 1)
				creds <- auth.Credentials{Token: "T", ServerURL: url}
				d := make(chan struct{})
				done = append(done, d)
				go func() { defer close(d); _ = l.Run(ctx, creds) }()
			}
			var first, last time.Duration
			for i := 0; i < links; i++ {
				select {
				case <-tokens:
					at := time.Since(start)
					if i == 0 {
						first = at
					}
					last = at
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d links connected", i, links)
				}
			}
			if last > tt.latest {
				t.Fatalf("last first dial %v after start, want within %v", last, tt.latest)
			}
			if spread := last - first; spread < tt.minSpread || (tt.wantAllAtOnce && spread > 300*time.Millisecond) {
				t.Fatalf("first dials spread over %v (%v to %v) with StartJitter %v", spread, first, last, tt.jitter)
			}
		})
	}
}

// A refused dial becomes a statusError with the server's code, its
// Retry-After and the start of its body in the text; the token goes in
// the Authorization header.
func TestRefusedDial(t *testing.T) {
	tests := []struct {
		code       int
		retryAfter string
		body       string
		wantWait   time.Duration
		wantText   string
		unauth     bool
	}{
		{503, "42", "maintenance\n", 42 * time.Second, "503 Service Unavailable: maintenance", false},
		{429, "7", "", 7 * time.Second, "429 Too Many Requests: ", false},
		{401, "", "token expired", 0, "401 Unauthorized: token expired", true},
		{502, "30", "bad gateway", 0, "502 Bad Gateway: bad gateway", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			authz := make(chan string, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				authz <- r.Header.Get("Authorization")
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.code)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			l, err := New(Options{WriteTimeout: time.Second}, nopHandler{}, mux.New(nil))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = l.connectAndServe(context.Background(), auth.Credentials{Token: "T", ServerURL: srv.URL})
			if err == nil || !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("dial: %v, want %q", err, tt.wantText)
			}
			if got := retryAfter(err); got != tt.wantWait {
				t.Errorf("retry after %v, want %v", got, tt.wantWait)
			}
			if isUnauthorized(err) != tt.unauth {
				t.Errorf("isUnauthorized = %v", !tt.unauth)
			}
			if got := <-authz; got != "Bearer T" {
				t.Errorf("Authorization %q", got)
			}
		})
	}
}
