// Command ptyrelay is the floor of a terminal agent's output path: it runs
// a command on a pty and writes everything the pty gives, read for read,
// as binary websocket frames to a URL. No protocol, no session, no queue:
// what any agent must spend to carry a terminal's output. The guest bench
// (internal/tstest/hil, `make bench-guests`) runs it, built statically for
// the guest, next to tether on the same output.
//
//	ptyrelay ws://host:port/path command [args...]
//
// At the end it prints its own CPU time, without the command's, and its
// pty reads and websocket frames: "relaycpu=USER SYS READS FRAMES".
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: ptyrelay ws://host:port/path command [args...]")
		os.Exit(2)
	}
	if err := relay(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "ptyrelay:", err)
		os.Exit(1)
	}
}

// busyRead is a read big enough that more is likely there: tether's own
// threshold (internal/shell).
const busyRead = 1024

// fill waits until the pty is readable, then reads while big reads come,
// up to len(buf).
func fill(rc syscall.RawConn, buf []byte, reads *int) (n int, err error) {
	rerr := rc.Read(func(fd uintptr) bool {
		m, e := unix.Read(int(fd), buf)
		*reads++
		if e == unix.EAGAIN {
			return false // wait in the poller
		}
		if e != nil || m <= 0 {
			n, err = 0, e
			if e == nil {
				err = io.EOF
			}
			return true
		}
		n = m
		for m >= busyRead && n < len(buf) {
			*reads++
			if m, e = unix.Read(int(fd), buf[n:]); m <= 0 || e != nil {
				break // EAGAIN, EIO: the next call reports it
			}
			n += m
		}
		return true
	})
	if rerr != nil {
		return n, rerr
	}
	return n, err
}

func relay(url string, argv []string) error {
	// The socket as tether sets it up: at most 16 KiB unsent.
	d := websocket.Dialer{ReadBufferSize: 4 << 10, WriteBufferSize: 64 << 10,
		NetDial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
				return c.Control(func(fd uintptr) {
					_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 16<<10)
				})
			}}
			return nd.Dial(network, addr)
		}}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		return fmt.Errorf("dial %s: %w", url, err)
	}
	defer ws.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	f, err := pty.Start(cmd)
	if err != nil {
		return fmt.Errorf("start %s on a pty: %w", argv[0], err)
	}
	defer f.Close()
	// The pty is read as tether reads it, so the floor is the same reads
	// and writes without the protocol: wait for data, then take what is
	// already there (the line discipline hands out at most 4 KiB per
	// read) up to 32 KiB, and send that as one frame.
	//
	// Reads wait in Go's poller, as tether's do, not in a blocking poll:
	// a blocking system call hands the runtime's P to another thread and
	// back, which on a small CPU costs more than the copy.
	dup, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("dup pty: %w", err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return fmt.Errorf("pty non-blocking: %w", err)
	}
	pf := os.NewFile(uintptr(dup), "ptmx")
	defer pf.Close()
	rc, err := pf.SyscallConn()
	if err != nil {
		return fmt.Errorf("pty raw conn: %w", err)
	}
	buf := make([]byte, 32<<10)
	reads, frames := 0, 0
	for {
		n, err := fill(rc, buf, &reads)
		if n > 0 {
			frames++
			if werr := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
		}
		if err != nil {
			// EIO: the command ended and the pty's other side closed.
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EIO) {
				return fmt.Errorf("read pty: %w", err)
			}
			break
		}
	}
	_ = cmd.Wait()
	err = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	var ru syscall.Rusage
	if rerr := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); rerr != nil {
		return errors.Join(err, fmt.Errorf("getrusage: %w", rerr))
	}
	sec := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	fmt.Printf("relaycpu=%.3f %.3f %d %d\n", sec(ru.Utime), sec(ru.Stime), reads, frames)
	return err
}
