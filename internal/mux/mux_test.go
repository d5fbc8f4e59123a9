package mux

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// drain takes every pending frame as the writer would.
func drain(m *Mux) []string {
	var out []string
	for f := m.Next(); f != nil; f = m.Next() {
		out = append(out, string(f))
		m.Written(nil)
	}
	return out
}

func TestRoundRobinAndBackPressure(t *testing.T) {
	m := New(nil)
	m.Up(nil)
	flood, echo := m.NewQueue(100), m.NewQueue(100)
	for i := 0; i < 3; i++ {
		if err := flood.Put(context.Background(), make([]byte, 30)); err != nil {
			t.Fatal(err)
		}
	}
	// Full: the next put waits until the writer takes a frame.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := flood.Put(ctx, make([]byte, 30)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put on a full queue did not wait: %v", err)
	}
	cancel()
	if flood.TryPut(make([]byte, 30)) {
		t.Fatal("TryPut on a full queue succeeded")
	}
	if !echo.TryPut([]byte("e")) {
		t.Fatal("echo TryPut failed")
	}
	// The echo goes out after at most one flood frame.
	if f := m.Next(); len(f) != 30 {
		t.Fatalf("first frame %d bytes", len(f))
	}
	if m.Next() != nil {
		t.Fatal("a second frame was handed out while the first was being written")
	}
	m.Written(nil)
	if f := m.Next(); string(f) != "e" {
		t.Fatalf("echo not served second: %q", f)
	}
	m.Written(nil)
	done := make(chan error, 1)
	go func() { done <- flood.Put(context.Background(), make([]byte, 30)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("put not woken after room was made")
	}
	// A closed queue refuses frames but its pending ones still go out.
	q := m.NewQueue(100)
	_ = q.Put(context.Background(), []byte("last words"))
	q.Close()
	if err := q.Put(context.Background(), []byte("x")); !errors.Is(err, ErrQueueClosed) {
		t.Fatalf("put after close: %v", err)
	}
	got := drain(m)
	if len(got) != 4 || got[1] != "last words" {
		t.Fatalf("pending frame of a closed queue lost: %q", got)
	}
}

// Output produced while the link is down waits for the next connection,
// in order, and a full queue blocks its producer meanwhile.
func TestFramesSurviveLinkDown(t *testing.T) {
	m := New(nil)
	q := m.NewQueue(10)
	if err := q.Put(context.Background(), []byte("a")); err != nil {
		t.Fatalf("put while down: %v", err)
	}
	m.Up(nil)
	if f := m.Next(); string(f) != "a" {
		t.Fatalf("frame queued while down not sent after up: %q", f)
	}
	m.Written(nil)
	m.Down()
	for _, s := range []string{"b", "c", "dddddddd"} {
		if err := q.Put(context.Background(), []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Put(ctx, []byte("e")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put on a full queue while down: %v", err)
	}
	m.Up(nil)
	if got := drain(m); len(got) != 3 || got[0] != "b" || got[1] != "c" || got[2] != "dddddddd" {
		t.Fatalf("after reconnect: %q", got)
	}
}

// A frame whose write failed (the connection broke under it) goes out
// first on the next connection; it is neither lost nor reported as sent.
func TestFailedWriteIsRequeued(t *testing.T) {
	tests := []struct {
		name   string
		direct bool
	}{{"writer", false}, {"direct", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(nil)
			var sentCalls int
			q := m.NewQueue(100)
			broken := errors.New("broken pipe")
			if tt.direct {
				m.Up(func([]byte) error { return broken })
				if err := q.Put(context.Background(), []byte("x")); err != nil {
					t.Fatal(err)
				}
			} else {
				m.Up(nil)
				q.Control([]byte("x"), func() { sentCalls++ })
				if f := m.Next(); string(f) != "x" {
					t.Fatalf("next %q", f)
				}
				m.Written(broken)
			}
			_ = q.Put(context.Background(), []byte("y"))
			m.Down()
			m.Up(nil)
			if got := drain(m); len(got) != 2 || got[0] != "x" || got[1] != "y" {
				t.Fatalf("after reconnect %q, want x then y", got)
			}
			if !tt.direct && sentCalls != 1 {
				t.Fatalf("sent called %d times, want once (after the good write)", sentCalls)
			}
		})
	}
}

func TestDirectWrite(t *testing.T) {
	m := New(nil)
	var direct [][]byte
	m.Up(func(f []byte) error { direct = append(direct, f); return nil })
	q := m.NewQueue(100)
	// Idle: the producer writes itself.
	if err := q.Put(context.Background(), []byte("a")); err != nil || len(direct) != 1 || m.Pending() {
		t.Fatalf("idle put not written directly: %v %q", err, direct)
	}
	// Busy writer: frames queue up in order.
	if !q.TryPut([]byte("b")) {
		t.Fatal("TryPut failed")
	}
	_ = m.Next() // the writer is now writing "b"
	if err := q.Put(context.Background(), []byte("c")); err != nil || len(direct) != 1 {
		t.Fatalf("put while the writer writes went direct: %q", direct)
	}
	m.Written(nil)
	if f := m.Next(); string(f) != "c" {
		t.Fatalf("queued frame lost: %q", f)
	}
	m.Written(nil)
}

// Control frames pass a full queue (a health ping must not wait behind a
// stalled flood) and report when they actually left.
func TestControlPassesFullQueueAndReportsSent(t *testing.T) {
	m := New(nil)
	q := m.NewQueue(4)
	_ = q.Put(context.Background(), []byte("full"))
	left := false
	if !q.Control([]byte("ping"), func() { left = true }) {
		t.Fatal("control frame refused on a full queue")
	}
	if left {
		t.Fatal("sent before it was written")
	}
	m.Up(nil)
	got := drain(m)
	if len(got) != 2 || got[1] != "ping" || !left {
		t.Fatalf("frames %q, sent %v", got, left)
	}
	q.Close()
	if q.Control([]byte("late"), nil) {
		t.Fatal("control frame accepted on a closed queue")
	}
}

// UpTime counts only time the link was up, by the clock given.
func TestUpTimeCountsOnlyLinkUp(t *testing.T) {
	now := time.Unix(1000, 0)
	m := New(func() time.Time { return now })
	now = now.Add(time.Hour) // down: not counted
	m.Up(nil)
	now = now.Add(3 * time.Second)
	m.Down()
	now = now.Add(time.Minute)
	m.Up(nil)
	now = now.Add(2 * time.Second)
	if got := m.UpTime(); got != 5*time.Second {
		t.Fatalf("UpTime %v, want 5s", got)
	}
}
