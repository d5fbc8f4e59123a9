package link

import (
	"context"
	"errors"
	"testing"
	"time"
)

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

func TestMuxRoundRobinAndBackPressure(t *testing.T) {
	m := NewMux()
	flood, echo := m.NewQueue(100), m.NewQueue(100)
	if err := flood.Put(context.Background(), []byte("x")); !errors.Is(err, ErrDown) {
		t.Fatalf("put while down: %v", err)
	}
	m.setUp(true, nil)
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
	if f := m.next(); len(f) != 30 {
		t.Fatalf("first frame %d bytes", len(f))
	}
	if m.next() != nil {
		t.Fatal("a second frame was handed out while the first was being written")
	}
	m.written()
	if f := m.next(); string(f) != "e" {
		t.Fatalf("echo not served second: %q", f)
	}
	m.written()
	done := make(chan error, 1)
	go func() { done <- flood.Put(context.Background(), make([]byte, 30)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("put not woken after room was made")
	}
	// Going down drops the queue and wakes blocked producers with ErrDown.
	go func() { done <- flood.Put(context.Background(), make([]byte, 90)) }()
	time.Sleep(20 * time.Millisecond)
	m.setUp(false, nil)
	if err := <-done; !errors.Is(err, ErrDown) {
		t.Fatalf("blocked put after down: %v", err)
	}
	if m.Pending() || m.next() != nil {
		t.Fatal("frames survived the link going down")
	}
	// A closed queue refuses frames but its pending ones still go out.
	m.setUp(true, nil)
	q := m.NewQueue(100)
	_ = q.Put(context.Background(), []byte("last words"))
	q.Close()
	if err := q.Put(context.Background(), []byte("x")); !errors.Is(err, ErrQueueClosed) {
		t.Fatalf("put after close: %v", err)
	}
	if f := m.next(); string(f) != "last words" {
		t.Fatalf("pending frame of a closed queue lost: %q", f)
	}
	m.written()
}

func TestMuxDirectWrite(t *testing.T) {
	m := NewMux()
	var direct [][]byte
	m.setUp(true, func(f []byte) { direct = append(direct, f) })
	q := m.NewQueue(100)
	// Idle: the producer writes itself.
	if err := q.Put(context.Background(), []byte("a")); err != nil || len(direct) != 1 || m.Pending() {
		t.Fatalf("idle put not written directly: %v %q", err, direct)
	}
	// Busy writer: frames queue up in order.
	if f := q.TryPut([]byte("b")); !f {
		t.Fatal("TryPut failed")
	}
	_ = m.next() // the writer is now writing "b"
	if err := q.Put(context.Background(), []byte("c")); err != nil || len(direct) != 1 {
		t.Fatalf("put while the writer writes went direct: %q", direct)
	}
	m.written()
	if f := m.next(); string(f) != "c" {
		t.Fatalf("queued frame lost: %q", f)
	}
	m.written()
}
