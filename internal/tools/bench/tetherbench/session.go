package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/wire"
)

// bench drives sessions over one device connection. Frames are read by
// one consumer at a time (the measuring function).
type bench struct {
	c    *devConn
	ctx  context.Context
	pids map[string]int
}

func (b *bench) next() (*wire.ProtoMsg, error) {
	select {
	case m, ok := <-b.c.in:
		if !ok {
			return nil, fmt.Errorf("device connection closed")
		}
		return m, nil
	case <-b.ctx.Done():
		return nil, b.ctx.Err()
	}
}

func (b *bench) input(sid, s string) error {
	return b.c.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellData, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: "bench"}}, Body: []byte(s)})
}

func (b *bench) newShell(sid string) error {
	return b.c.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellNew, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: "bench", wire.PropTerminalWidth: 80, wire.PropTerminalHeight: 24}}})
}

func (b *bench) stop(sid string) error {
	return b.c.send(&wire.ProtoMsg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.ShellStop, SessionID: sid,
		Properties: map[string]interface{}{wire.PropUserID: "bench"}}})
}

// open starts a shell, runs setup, and waits until it is at a quiet prompt.
func (b *bench) open(sid, setup string) error {
	if err := b.newShell(sid); err != nil {
		return err
	}
	if err := b.waitNew(sid); err != nil {
		return err
	}
	if err := b.input(sid, setup+"echo $$; echo READY''-$((1+1))\n"); err != nil {
		return err
	}
	out, err := b.until(sid, "READY-2")
	if err != nil {
		return err
	}
	b.recordPid(sid, out)
	time.Sleep(100 * time.Millisecond)
	b.drain()
	return nil
}

func (b *bench) recordPid(sid, out string) {
	if b.pids == nil {
		b.pids = map[string]int{}
	}
	for _, f := range strings.Fields(out) {
		if n, err := strconv.Atoi(f); err == nil && n > 1 {
			b.pids[sid] = n
			return
		}
	}
}

func (b *bench) waitNew(sid string) error {
	for {
		m, err := b.next()
		if err != nil {
			return err
		}
		if m.Header.MsgType == wire.ShellNew && m.Header.SessionID == sid {
			if st, _ := m.Header.IntProp(wire.PropStatus); st != wire.StatusNormal {
				return fmt.Errorf("new %s refused: %s", sid, m.Body)
			}
			return nil
		}
	}
}

func (b *bench) until(sid, marker string) (string, error) {
	var out bytes.Buffer
	for !strings.Contains(out.String(), marker) {
		m, err := b.next()
		if err != nil {
			return out.String(), err
		}
		if m.Header.MsgType == wire.ShellData && m.Header.SessionID == sid {
			out.Write(m.Body)
		}
	}
	return out.String(), nil
}

func (b *bench) drain() {
	for {
		select {
		case <-b.c.in:
		default:
			return
		}
	}
}

// echo measures keystroke round trips: one key in, its echo out. Output of
// other sessions is skipped while waiting.
func (b *bench) echo(sid string, n int) (p50, p99 time.Duration, err error) {
	b.drain()
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		key := string(rune('a' + i%26))
		t0 := time.Now()
		if err := b.input(sid, key); err != nil {
			return 0, 0, err
		}
		for {
			m, err := b.next()
			if err != nil {
				return 0, 0, err
			}
			if m.Header.MsgType == wire.ShellData && m.Header.SessionID == sid && bytes.Contains(m.Body, []byte(key)) {
				break
			}
		}
		rtts = append(rtts, time.Since(t0))
	}
	// End the typed line (the shell reports a command not found) and
	// let the prompt come back before anything else is measured.
	_ = b.input(sid, "\n")
	time.Sleep(200 * time.Millisecond)
	b.drain()
	sortDur(rtts)
	if os.Getenv("TETHERBENCH_HIST") != "" {
		for _, q := range []int{1, 10, 25, 50, 75, 90, 99} {
			fmt.Fprintf(os.Stderr, "p%d=%s ", q, rtts[n*q/100])
		}
		fmt.Fprintln(os.Stderr)
	}
	return rtts[n/2], rtts[n*99/100], nil
}

// throughput runs a command printing mb MiB and times the output frames
// as they arrive, counting payload bytes without decoding.
func (b *bench) throughput(sid string, mb int) (float64, float64, error) {
	b.drain()
	c := b.c
	c.firstAt.Store(0)
	c.counting.Store(true)
	bytes0, msgs0 := c.rawBytes.Load(), c.rawMsgs.Load()
	if err := b.input(sid, "head -c "+strconv.Itoa(mb<<20)+" /dev/zero\n"); err != nil {
		return 0, 0, err
	}
	overhead := int64(len(wire.AppendShellOutput(nil, sid, []byte{0})) - 1)
	want := int64(mb << 20)
	deadline := time.Now().Add(2 * time.Minute)
	var payload int64
	for {
		payload = c.rawBytes.Load() - bytes0 - (c.rawMsgs.Load()-msgs0)*overhead
		if payload >= want {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("throughput: %d of %d bytes after 2 minutes", payload, want)
		}
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(time.Unix(0, c.firstAt.Load()))
	msgs := c.rawMsgs.Load() - msgs0
	c.counting.Store(false)
	time.Sleep(200 * time.Millisecond)
	b.drain()
	return float64(payload) / el.Seconds() / 1e6, float64(payload) / float64(msgs), nil
}

// openMany opens n sessions at once and counts the accepted ones.
func (b *bench) openMany(n int) (int, error) {
	b.drain()
	for i := 0; i < n; i++ {
		if err := b.newShell(fmt.Sprintf("many-%d", i)); err != nil {
			return 0, err
		}
	}
	ok, done := 0, 0
	for done < n {
		m, err := b.next()
		if err != nil {
			return ok, err
		}
		if m.Header.MsgType == wire.ShellNew {
			done++
			if st, _ := m.Header.IntProp(wire.PropStatus); st == wire.StatusNormal {
				ok++
			} else {
				fmt.Fprintf(os.Stderr, "session refused: %s\n", m.Body)
			}
		}
	}
	// Learn the shells' pids for the stop measurement.
	for i := 0; i < 20; i++ {
		sid := fmt.Sprintf("many-%d", i)
		if err := b.input(sid, "echo $$; echo PID''-$((2+2))\n"); err != nil {
			return ok, err
		}
		out, err := b.until(sid, "PID-4")
		if err != nil {
			return ok, err
		}
		b.recordPid(sid, out)
	}
	return ok, nil
}
