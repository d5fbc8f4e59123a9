package mockserver

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// eventLog collects OnConnect events.
type eventLog struct {
	mu  sync.Mutex
	evs []ConnectEvent
}

func (l *eventLog) add(e ConnectEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) statuses() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]int, len(l.evs))
	for i, e := range l.evs {
		out[i] = e.Status
	}
	return out
}

// TestConnectLimit: above the rate the device endpoint says 503 "server is
// starting up", with Retry-After only when configured, and every request
// is reported with its answer.
func TestConnectLimit(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter time.Duration
		header     string
	}{
		{"upstream: no Retry-After", 0, ""},
		{"Retry-After rounded up to seconds", 2500 * time.Millisecond, "3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log eventLog
			// A rate so low that no token comes back during the test.
			s, url := startServer(t, Options{ConnectLimit: ConnectLimit{Rate: 0.001, Burst: 2, RetryAfter: tt.retryAfter}, OnConnect: log.add})
			tok := s.IssueDeviceToken("dev-limit")
			for i := 0; i < 2; i++ {
				conn, _, err := dialDevice(testCtx(t), url, tok, nil)
				if err != nil {
					t.Fatalf("connect %d within the burst: %v", i, err)
				}
				conn.Close()
			}
			_, resp, err := dialDevice(testCtx(t), url, tok, nil)
			if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
				t.Fatalf("third connect: %v, want a refused handshake", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var e struct{ Error string }
			_ = json.Unmarshal(body, &e)
			if resp.StatusCode != http.StatusServiceUnavailable || e.Error != StartingUpText {
				t.Fatalf("third connect: %d %s, want 503 %q", resp.StatusCode, body, StartingUpText)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.header {
				t.Fatalf("Retry-After %q, want %q", got, tt.header)
			}
			if _, resp, _ := dialDevice(testCtx(t), url, "not-a-token", nil); resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("bad token: %v, want 401", resp)
			}
			got := log.statuses()
			want := []int{101, 101, 503, 401}
			if len(got) != len(want) {
				t.Fatalf("events %v, want %v", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("events %v, want %v", got, want)
				}
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			if log.evs[2].Device != "dev-limit" || log.evs[3].Device != "" {
				t.Fatalf("event devices %q, %q", log.evs[2].Device, log.evs[3].Device)
			}
		})
	}
}

// TestConnectBucketRefills: the bucket refills at the rate, up to its size.
func TestConnectBucketRefills(t *testing.T) {
	b := newConnectBucket(ConnectLimit{Rate: 10, Burst: 2})
	t0 := time.Unix(1000, 0)
	for i, want := range []bool{true, true, false} {
		if got := b.take(t0); got != want {
			t.Fatalf("take %d of a full bucket of 2: %v", i+1, got)
		}
	}
	if b.take(t0.Add(50 * time.Millisecond)) {
		t.Fatal("half a token after 50 ms at 10/s")
	}
	if !b.take(t0.Add(100 * time.Millisecond)) {
		t.Fatal("one token after 100 ms at 10/s")
	}
	n := 0
	for b.take(t0.Add(time.Hour)) {
		n++
	}
	if n != 2 {
		t.Fatalf("after an hour the bucket gave %d, want its size 2", n)
	}
	if newConnectBucket(ConnectLimit{}) != nil || !(*connectBucket)(nil).take(t0) {
		t.Fatal("no rate: every connect accepted")
	}
}

// TestCloseDevices: every device socket gets 1011 and the server stays up
// for the redial.
func TestCloseDevices(t *testing.T) {
	s, url := startServer(t, Options{})
	var reads []chan error
	for _, id := range []string{"dev-a", "dev-b", "dev-c"} {
		conn, _, err := dialDevice(testCtx(t), url, s.IssueDeviceToken(id), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := s.WaitDevice(testCtx(t), id); err != nil {
			t.Fatal(err)
		}
		read := make(chan error, 1)
		go func() {
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					read <- err
					return
				}
			}
		}()
		reads = append(reads, read)
	}
	if n := s.CloseDevices(); n != 3 {
		t.Fatalf("closed %d, want 3", n)
	}
	for _, read := range reads {
		var ce *websocket.CloseError
		if err := <-read; !errors.As(err, &ce) || ce.Code != websocket.CloseInternalServerErr {
			t.Fatalf("device read %v, want close 1011", err)
		}
	}
	for _, d := range s.deviceList() {
		if d.Connected {
			t.Fatalf("%s still connected", d.ID)
		}
	}
	conn, _, err := dialDevice(testCtx(t), url, s.IssueDeviceToken("dev-a"), nil)
	if err != nil {
		t.Fatalf("redial after CloseDevices: %v", err)
	}
	conn.Close()
}
