package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func nonblockingPipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(p[0]); syscall.Close(p[1]) })
	return p[0], p[1]
}

func TestReadWritePipe(t *testing.T) {
	r, w := nonblockingPipe(t)
	buf := make([]byte, 16)
	tests := []struct {
		name    string
		write   string
		wantN   int
		wantErr error
	}{
		{"empty pipe says EAGAIN, not 0", "", 0, syscall.EAGAIN},
		{"one byte", "a", 1, nil},
		{"what is there, not more", "hello", 5, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.write != "" {
				n, err := Write(uintptr(w), []byte(tt.write))
				if err != nil || n != len(tt.write) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			n, err := Read(uintptr(r), buf)
			if n != tt.wantN || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read = %d, %v; want %d, %v", n, err, tt.wantN, tt.wantErr)
			}
			if string(buf[:n]) != tt.write {
				t.Fatalf("read %q, want %q", buf[:n], tt.write)
			}
		})
	}
	if n, err := Read(uintptr(r), nil); n != 0 || err != nil {
		t.Fatalf("Read of nothing = %d, %v", n, err)
	}
}

func TestWriteFullPipeSaysEAGAIN(t *testing.T) {
	_, w := nonblockingPipe(t)
	big := make([]byte, 1<<20)
	total := 0
	for {
		n, err := Write(uintptr(w), big)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total == 0 || total >= len(big)*4 {
		t.Fatalf("a pipe took %d bytes before EAGAIN", total)
	}
	if _, err := Write(uintptr(0xffff), []byte("x")); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("write to a closed descriptor: %v, want EBADF", err)
	}
}

func tcpPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := NewConn(c.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { rc.Close(); peer.Close() })
	return rc, peer
}

func TestConnMovesDataBothWays(t *testing.T) {
	c, peer := tcpPair(t)
	// More than the socket buffers hold: Write must wait for room, and
	// the peer must get every byte in order.
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	n, err := c.Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("peer got %d bytes, want %d, equal=%v", len(b), len(data), bytes.Equal(b, data))
	}
	if _, err := peer.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "reply" {
		t.Fatalf("ReadAll = %q, %v; want the reply and a clean EOF", b, err)
	}
}

func TestConnDeadlines(t *testing.T) {
	c, _ := tcpPair(t)
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, err := c.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline: %v, want a timeout net.Error", err)
	}
	if el := time.Since(t0); el < 40*time.Millisecond || el > 5*time.Second {
		t.Fatalf("the deadline ended the read after %s", el)
	}
	// The peer never reads: writes fill the buffers and then time out.
	if err := c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= 64<<20 {
		t.Fatalf("Write to a peer that never reads = %d, %v; want a partial write and a timeout", n, err)
	}
}

func TestConnClosed(t *testing.T) {
	c, _ := tcpPair(t)
	c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed conn: %v, want net.ErrClosed", err)
	}
}

// Write reports progress each time it must wait after writing something,
// so a caller can keep a deadline that means "no progress for so long";
// with the peer reading slowly, a write taking far longer than the
// deadline still succeeds.
func TestConnWriteProgressRenewsDeadline(t *testing.T) {
	c, peer := tcpPair(t)
	// As the link sets it: the socket reports room whenever less than
	// 16 KiB is unsent, not only once a multi-megabyte buffer half drains.
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 16<<10)
	}); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 200 * time.Millisecond
	progress := 0
	c.SetWriteProgress(func() {
		progress++
		_ = c.SetWriteDeadline(time.Now().Add(timeout))
	})
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := peer.Read(buf); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // about 3 MB/s
		}
	}()
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	n, err := c.Write(make([]byte, 8<<20))
	if err != nil || n != 8<<20 {
		t.Fatalf("slow but steady peer: Write = %d, %v after %s", n, err, time.Since(t0))
	}
	if el := time.Since(t0); el < 2*timeout || progress < 2 {
		t.Fatalf("write took %s with %d progress reports: the peer was not slow enough to prove anything", el, progress)
	}
}
