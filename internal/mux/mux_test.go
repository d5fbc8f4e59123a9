package mux

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/leakcheck"
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

// A pooled frame is charged the buffer it pins, not its length, and its
// buffer comes back only once it is on the connection: after a failed
// write it is still owned by the queue.
func TestPooledFramesChargeHeldMemoryAndReleaseAfterWrite(t *testing.T) {
	tests := []struct {
		name   string
		direct bool
	}{{"writer", false}, {"direct", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(nil)
			q := m.NewQueue(100)
			released := 0
			release := func() { released++ }
			fail := true
			write := func([]byte) error {
				if fail {
					return errors.New("broken pipe")
				}
				return nil
			}
			if tt.direct {
				m.Up(write)
			} else {
				m.Up(nil)
			}
			// A 10-byte window into a 60-byte buffer.
			if err := q.PutPooled(context.Background(), make([]byte, 10), 60, release); err != nil {
				t.Fatal(err)
			}
			if !tt.direct {
				if f := m.Next(); len(f) != 10 {
					t.Fatalf("next frame %d bytes, want 10", len(f))
				}
				m.Written(write(nil))
			}
			if released != 0 {
				t.Fatal("a buffer was released after its write failed")
			}
			if got := q.Bytes(); got != 60 {
				t.Fatalf("queue charged %d bytes, want the 60 the frame pins", got)
			}
			// 60 pinned + 50 > 100: the queue is full for a 50-byte frame.
			if q.TryPut(make([]byte, 50)) {
				t.Fatal("the queue took 50 bytes beside 60 pinned, over its 100-byte limit")
			}
			fail = false
			m.Down()
			m.Up(nil)
			if f := m.Next(); len(f) != 10 {
				t.Fatalf("after the reconnect the frame is %d bytes, want 10", len(f))
			}
			if released != 0 {
				t.Fatal("released before the write ended")
			}
			m.Written(nil)
			if released != 1 || q.Bytes() != 0 {
				t.Fatalf("after the write: released %d times, queue holds %d; want 1 and 0", released, q.Bytes())
			}
		})
	}
}

// Written directly by an idle producer, a pooled frame is released at once.
func TestPooledDirectWriteReleases(t *testing.T) {
	m := New(nil)
	var wrote [][]byte
	m.Up(func(f []byte) error { wrote = append(wrote, f); return nil })
	q := m.NewQueue(100)
	released := 0
	if err := q.PutPooled(context.Background(), []byte("k"), 64, func() { released++ }); err != nil {
		t.Fatal(err)
	}
	if len(wrote) != 1 || released != 1 || q.Bytes() != 0 {
		t.Fatalf("direct pooled put: %d writes, %d releases, %d bytes queued; want 1, 1, 0", len(wrote), released, q.Bytes())
	}
}

// A transfer's queue, which holds up to a window of frames and empties
// often, reuses its array: queuing and writing a pooled frame allocates
// nothing, whether the queue empties after every frame or stays a window
// deep.
func TestQueueFrameCycleDoesNotAllocate(t *testing.T) {
	for _, depth := range []int{0, 1, 20} {
		m := New(nil)
		q := m.NewQueue(1 << 20)
		b := make([]byte, 4200)
		released := 0
		release := func() { released++ }
		ctx := context.Background()
		for i := 0; i < depth; i++ {
			if err := q.PutPooled(ctx, b, len(b), release); err != nil {
				t.Fatal(err)
			}
		}
		n := testing.AllocsPerRun(100, func() {
			if err := q.PutPooled(ctx, b, len(b), release); err != nil {
				t.Fatal(err)
			}
			if f := m.Next(); f == nil {
				t.Fatal("no frame")
			}
			m.Written(nil)
		})
		if n != 0 {
			t.Errorf("depth %d: %v allocations per frame", depth, n)
		}
		if released != 101 {
			t.Errorf("depth %d: released %d frames, want 101", depth, released)
		}
	}
}

// While the link's gate is shut, a small frame is queued for the writer
// instead of written directly, so a flood of small frames cannot slip past
// the pacer; once it opens, direct writes resume. Down clears the gate and
// the frame hint.
func TestGateStopsDirectWrites(t *testing.T) {
	m := New(nil)
	var direct []string
	m.Up(func(b []byte) error { direct = append(direct, string(b)); return nil })
	open := false
	m.Gate(func() bool { return open })
	m.SetFrameHint(4096)
	q := m.NewQueue(100)
	if q.FrameHint() != 4096 {
		t.Fatalf("frame hint %d, want 4096", q.FrameHint())
	}
	if err := q.Put(context.Background(), []byte("shut")); err != nil {
		t.Fatal(err)
	}
	if len(direct) != 0 {
		t.Fatalf("written directly through a shut gate: %q", direct)
	}
	if got := drain(m); len(got) != 1 || got[0] != "shut" {
		t.Fatalf("queued %q, want [shut]", got)
	}
	open = true
	if err := q.Put(context.Background(), []byte("open")); err != nil {
		t.Fatal(err)
	}
	if len(direct) != 1 || direct[0] != "open" {
		t.Fatalf("direct writes %q, want [open]", direct)
	}
	m.Down()
	if q.FrameHint() != 0 {
		t.Fatalf("frame hint %d after Down, want 0", q.FrameHint())
	}
	open = false
	m.Up(func(b []byte) error { direct = append(direct, string(b)); return nil })
	if err := q.Put(context.Background(), []byte("again")); err != nil {
		t.Fatal(err)
	}
	if len(direct) != 2 {
		t.Fatalf("the gate outlived Down: direct writes %q", direct)
	}
}
