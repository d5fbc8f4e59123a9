package mockserver

import (
	"errors"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// settleGoroutines waits until at most n goroutines run.
func settleGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want ≤ %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s := New(Options{})
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-leak"))
	d, err := s.WaitDevice(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	frames, _ := d.Subscribe()
	userTok := login(t, url)
	term, err := OpenTerminal(testCtx(t), url, userTok, "dev-leak", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := Dial(testCtx(t), url, userTok, "dev-leak")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := term.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := term.Expect(testCtx(t), "x"); err != nil {
		t.Fatal(err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Close ended everything from the server side.
	<-fd.done
	<-d.Done()
	for range frames {
	}
	for _, tm := range []*Terminal{term, idle} {
		for range tm.Messages() {
		}
		var ce *websocket.CloseError
		if !errors.As(tm.Err(), &ce) {
			t.Errorf("terminal ended with %v, want a close frame", tm.Err())
		}
		tm.Close()
	}
	if _, err := s.Start("127.0.0.1:0"); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if _, err := http.Get(url + LoginPath); err == nil {
		t.Error("listener still open")
	}
	settleGoroutines(t, before)
}

func TestCloseWithHandlerOnly(t *testing.T) {
	before := runtime.NumGoroutine()
	s := New(Options{})
	srv := &http.Server{Handler: s.Handler()}
	ln := listenLoopback(t)
	go func() { _ = srv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	fd := startFakeDevice(t, url, s.IssueDeviceToken("dev-h"))
	if _, err := s.WaitDevice(testCtx(t), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-fd.done
	_ = srv.Close()
	settleGoroutines(t, before)
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
