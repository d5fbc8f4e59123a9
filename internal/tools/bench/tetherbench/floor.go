package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"
)

// The floors the echo round trip is made of, measured in the same run and
// the same way: a key through a bare pty's line discipline, and a frame
// through a bare loopback websocket echo served by another process, with a
// reader goroutine and a channel on the measuring side, as the bench has.

// ptyEchoFloor types into a bare pty whose slave side is read the way the
// bench's shell reads it (non-canonical, one key at a time), so the floor
// includes the reader's wake-up as the real echo does.
func ptyEchoFloor(n int) (p50, p99 time.Duration, err error) {
	cmd := exec.Command("/bin/sh", "-c", "stty -icanon; exec cat >/dev/null")
	f, err := pty.Start(cmd)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); f.Close() }()
	buf := make([]byte, 64)
	time.Sleep(100 * time.Millisecond) // let stty run first
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := f.Write([]byte{'a' + byte(i%26)}); err != nil {
			return 0, 0, err
		}
		if _, err := f.Read(buf); err != nil {
			return 0, 0, err
		}
		rtts = append(rtts, time.Since(t0))
	}
	sortDur(rtts)
	return rtts[n/2], rtts[n*99/100], nil
}

// echoServerEnv makes the bench binary run as the websocket echo server
// of the floor measurement, so that the floor, like the real echo, crosses
// a process boundary (on a VM that wake-up is a large part of the cost).
const echoServerEnv = "TETHERBENCH_ECHO_SERVER"

// relayServerEnv makes the bench binary run as the third floor: the
// websocket echo server, but with a pty in the loop, as bare as a relay can
// be (no protocol, no queues): each message is written to a pty whose
// line discipline echoes it, and each read of the pty goes back as a
// message. It is the echo path of any agent process, minus tether.
const relayServerEnv = "TETHERBENCH_PTY_RELAY"

// serveEcho runs the echo server: it prints its address and echoes every
// message until stdin closes.
func serveEcho() error { return serveWS(echoConn) }

func echoConn(c *websocket.Conn) {
	for {
		t, b, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(t, b); err != nil {
			return
		}
	}
}

// serveRelayEcho runs the relay floor's server.
func serveRelayEcho() error {
	return serveWS(func(c *websocket.Conn) {
		cmd := exec.Command("/bin/sh", "-c", "stty -icanon; exec cat >/dev/null")
		f, err := pty.Start(cmd)
		if err != nil {
			return
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); f.Close() }()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				if err != nil {
					return
				}
				if err := c.WriteMessage(websocket.BinaryMessage, buf[:n]); err != nil {
					return
				}
			}
		}()
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			if _, err := f.Write(b); err != nil {
				return
			}
		}
	})
}

func serveWS(handle func(*websocket.Conn)) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		handle(c)
	})}
	go func() { _ = srv.Serve(l) }()
	fmt.Println(l.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent goes away
	return srv.Close()
}

// wsEchoFloor measures the websocket echo; with the pty relay as the
// server (relay true) it is the third floor.
func wsEchoFloor(n int, relay bool) (p50, p99 time.Duration, err error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self)
	env := echoServerEnv
	if relay {
		env = relayServerEnv
	}
	cmd.Env = append(os.Environ(), env+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return 0, 0, fmt.Errorf("echo server: %w", err)
	}
	c, _, err := websocket.DefaultDialer.Dial("ws://"+strings.TrimSpace(addr)+"/", nil)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	in := make(chan []byte, 16)
	go func() {
		defer close(in)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			in <- b
		}
	}()
	if relay {
		time.Sleep(200 * time.Millisecond) // let stty run first
	}
	msg := make([]byte, 60) // about a keystroke frame
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		if relay {
			msg = []byte{'a' + byte(i%26)} // a key, echoed by the pty
		}
		t0 := time.Now()
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return 0, 0, err
		}
		<-in
		rtts = append(rtts, time.Since(t0))
	}
	sortDur(rtts)
	return rtts[n/2], rtts[n*99/100], nil
}
