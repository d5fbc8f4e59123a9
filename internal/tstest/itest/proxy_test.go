package itest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// proxy is a TCP relay on loopback between the daemon and the mock server,
// playing a bad network or a bad server: it can stop reading from the
// device (Stall), read from it at a fixed byte rate, cut every connection
// and refuse new ones. Its sockets have a small receive buffer, as a slow
// path has a small window: what the device sent but the server has not
// read stays small, so latency comes from the device's own queueing.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	lim    *rate.Limiter // device→server; nil = unlimited
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	gate   chan struct{} // non-nil while stalled; closed on Resume
	refuse bool
	conns  map[net.Conn]struct{}
}

const proxyRcvBuf = 32 << 10

// newProxy relays to target; bytesPerSec > 0 throttles device→server.
func newProxy(t *testing.T, target string, bytesPerSec int) *proxy {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, proxyRcvBuf)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proxy{t: t, ln: ln, target: target, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	if bytesPerSec > 0 {
		p.lim = rate.NewLimiter(rate.Limit(bytesPerSec), 4096)
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// url is the server URL to hand to the daemon.
func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) close() {
	p.cancel()
	p.ln.Close()
	p.Cut()
	p.Resume()
	p.wg.Wait()
}

// Stall stops reading from the device until Resume.
func (p *proxy) Stall() {
	p.mu.Lock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
	p.mu.Unlock()
}

func (p *proxy) Resume() {
	p.mu.Lock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
	p.mu.Unlock()
}

// Refuse closes new connections at once while on.
func (p *proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Cut closes every relayed connection, both sides.
func (p *proxy) Cut() {
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		dev, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			dev.Close()
			continue
		}
		srv, err := net.Dial("tcp", p.target)
		if err != nil {
			p.t.Errorf("proxy dial %s: %v", p.target, err)
			dev.Close()
			continue
		}
		p.mu.Lock()
		p.conns[dev], p.conns[srv] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			p.pump(srv, dev, true)
		}()
		go func() {
			defer p.wg.Done()
			p.pump(dev, srv, false)
		}()
	}
}

// pump copies src to dst until either fails, then closes both; the
// device→server direction obeys the stall gate and the rate.
func (p *proxy) pump(dst, src net.Conn, fromDevice bool) {
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 4096)
	for {
		if fromDevice {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			if gate != nil {
				select {
				case <-gate:
				case <-p.ctx.Done():
					return
				}
			}
		}
		n, err := src.Read(buf)
		if n > 0 {
			if fromDevice && p.lim != nil {
				if werr := p.lim.WaitN(p.ctx, n); werr != nil {
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// rssAnonKB is the daemon's anonymous resident memory, the part the kernel
// cannot reclaim (VmRSS is mostly the binary's file pages).
func (e *env) rssAnonKB() int { return procStatusKB(e.t, e.daemon.Process.Pid, "RssAnon") }

// cpuTicks is the daemon's user+system CPU time in clock ticks (1/100 s
// on Linux).
func (e *env) cpuTicks() int {
	e.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.daemon.Process.Pid))
	if err != nil {
		e.t.Fatalf("daemon stat: %v", err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		e.t.Fatalf("daemon stat %q: no comm", b)
	}
	// After ") ": state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime: utime is field 11 from there.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		e.t.Fatalf("daemon stat %q: too short", b)
	}
	u, err1 := strconv.Atoi(f[11])
	s, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		e.t.Fatalf("daemon stat %q: utime/stime: %v %v", b, err1, err2)
	}
	return u + s
}
