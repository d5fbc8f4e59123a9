// Command ptyrelay is the floor of a terminal agent's output path: it runs
// a command on a pty and writes everything the pty gives, read for read,
// as binary websocket frames to a URL. No protocol, no session, no queue:
// what any agent must spend to carry a terminal's output. The guest bench
// (internal/tstest/hil, `make bench-guests`) runs it, built statically for
// the guest, next to tether on the same output.
//
//	ptyrelay ws://host:port/path command [args...]
//
// At the end it prints its own CPU time, without the command's:
// "relaycpu=USER SYS" in seconds.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"
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

func relay(url string, argv []string) error {
	d := websocket.Dialer{ReadBufferSize: 4 << 10, WriteBufferSize: 64 << 10}
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
	// The size tether reads a pty with.
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
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
	fmt.Printf("relaycpu=%.3f %.3f\n", sec(ru.Utime), sec(ru.Stime))
	return err
}
