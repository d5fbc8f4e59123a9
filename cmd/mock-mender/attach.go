package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/creack/pty"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/wire"
)

func attach(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mock-mender attach", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mock-mender attach [flags] [DEVICE_ID]\n\n\"~.\" at the start of a line disconnects.\n\nflags:")
		fs.PrintDefaults()
	}
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args()[1:])
	}
	tok, err := mockserver.Login(ctx, cf.server, cf.user, cf.password)
	if err != nil {
		return err
	}
	deviceID := fs.Arg(0)
	if deviceID == "" {
		devs, err := mockserver.ListDevices(ctx, cf.server, tok)
		if err != nil {
			return err
		}
		if deviceID, err = pickDevice(devs); err != nil {
			return err
		}
	}

	fd := int(stdin.Fd())
	tty := isTerminal(fd)
	cols, rows := windowSize(stdin, tty)
	term, err := mockserver.OpenTerminal(ctx, cf.server, tok, deviceID, cols, rows)
	if err != nil {
		return fmt.Errorf("open terminal on %s: %w", deviceID, err)
	}
	defer term.Close()
	if tty {
		restore, err := makeRaw(fd)
		if err != nil {
			return err
		}
		defer restore()
	}

	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// The input goroutine is left blocked in Read when the session ends;
	// the process exits right after.
	detach := make(chan struct{})
	go copyInput(stdin, term, detach)

	for {
		select {
		case m, ok := <-term.Messages():
			if !ok {
				return fmt.Errorf("connection to the server ended: %w", term.Err())
			}
			if m.Header.Proto != wire.ProtoShell {
				continue
			}
			switch m.Header.MsgType {
			case wire.ShellData:
				if _, err := stdout.Write(m.Body); err != nil {
					return fmt.Errorf("writing output: %w", err)
				}
			case wire.ShellStop:
				reason := string(m.Body)
				if reason == "" {
					reason = "stopped"
				}
				fmt.Fprintf(stdout, "\r\n[shell stopped: %s]\r\n", reason)
				return nil
			}
		case <-winch:
			if tty {
				if err := term.Resize(windowSize(stdin, true)); err != nil {
					return err
				}
			}
		case <-detach:
			fmt.Fprint(stdout, "\r\n[disconnected]\r\n")
			return nil
		case s := <-sigs:
			fmt.Fprintf(stdout, "\r\n[%v]\r\n", s)
			return nil
		}
	}
}

// copyInput forwards stdin to the terminal and closes detach on "~." at
// the start of a line. At end of input it just stops: output keeps
// flowing until the shell ends.
func copyInput(stdin io.Reader, term *mockserver.Terminal, detach chan<- struct{}) {
	esc := escaper{atLineStart: true}
	buf := make([]byte, 4096)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			out, quit := esc.feed(buf[:n])
			if len(out) > 0 {
				if _, werr := term.Write(out); werr != nil {
					return
				}
			}
			if quit {
				close(detach)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// escaper implements ssh's escape: "~." at the start of a line
// disconnects, "~~" sends one "~", "~" followed by anything else is sent
// as is.
type escaper struct {
	atLineStart  bool
	pendingTilde bool
}

func (e *escaper) feed(in []byte) (out []byte, disconnect bool) {
	out = make([]byte, 0, len(in)+1)
	for _, b := range in {
		if e.pendingTilde {
			e.pendingTilde = false
			switch b {
			case '.':
				return out, true
			case '~':
				out = append(out, '~')
				e.atLineStart = false
				continue
			default:
				out = append(out, '~')
			}
		} else if e.atLineStart && b == '~' {
			e.pendingTilde = true
			continue
		}
		out = append(out, b)
		e.atLineStart = b == '\r' || b == '\n'
	}
	return out, false
}

func windowSize(f *os.File, tty bool) (cols, rows uint16) {
	if tty {
		if ws, err := pty.GetsizeFull(f); err == nil && ws.Cols > 0 && ws.Rows > 0 {
			return ws.Cols, ws.Rows
		}
	}
	return 80, 24
}
