// Package slowpath is a TCP relay that plays a slow network path between
// the device and the server, for the integration tests and the bench: it
// reads the device's side at a set byte rate (as a congested path or a
// busy server does), and can add a fixed delay each way. Its sockets keep
// the kernel's default buffers, so the bytes the device sent and the
// server has not taken wait where they would on a real path: in the
// relay's receive buffer, out of the device's sight.
package slowpath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Options shape the path.
type Options struct {
	// Rate is the device→server byte rate; 0 = as fast as the relay goes.
	Rate int
	// Delay is added each way, device→server and server→device.
	Delay time.Duration
}

// Proxy relays every connection accepted on its address to Target.
type Proxy struct {
	opts   Options
	target string
	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	up   atomic.Int64 // bytes relayed device→server
	mu   sync.Mutex
	errs []error
}

// Listen starts a relay on a loopback port to target.
func Listen(target string, o Options) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("slowpath listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{opts: o, target: target, ln: ln, ctx: ctx, cancel: cancel}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the relay's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the server URL to hand to the daemon.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Up is the number of bytes relayed from the device to the server so far.
func (p *Proxy) Up() int64 { return p.up.Load() }

// Close ends every relayed connection and waits for the relay to stop; it
// returns the first relay error other than a connection's end.
func (p *Proxy) Close() error {
	p.cancel()
	p.ln.Close()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.errs...)
}

func (p *Proxy) fail(err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		dev, err := p.ln.Accept()
		if err != nil {
			return
		}
		var d net.Dialer
		srv, err := d.DialContext(p.ctx, "tcp", p.target)
		if err != nil {
			if p.ctx.Err() == nil {
				p.fail(fmt.Errorf("slowpath dial %s: %w", p.target, err))
			}
			dev.Close()
			continue
		}
		// Either direction's end, or Close, ends both.
		ctx, cancel := context.WithCancel(p.ctx)
		p.wg.Add(3)
		go func() {
			defer p.wg.Done()
			<-ctx.Done()
			dev.Close()
			srv.Close()
		}()
		var lim *rate.Limiter
		if p.opts.Rate > 0 {
			lim = rate.NewLimiter(rate.Limit(p.opts.Rate), chunkFor(p.opts.Rate))
		}
		go func() {
			defer p.wg.Done()
			defer cancel()
			p.pump(ctx, srv, dev, lim, &p.up)
		}()
		go func() {
			defer p.wg.Done()
			defer cancel()
			p.pump(ctx, dev, srv, nil, nil)
		}()
	}
}

// chunkFor is the read size at a rate: about 10 ms of it, at least 4 KiB,
// so the relay reads in small steps as a paced path delivers.
func chunkFor(bytesPerSec int) int {
	return max(4096, min(64<<10, bytesPerSec/100))
}

type piece struct {
	b   []byte
	due time.Time
}

// pump reads src at lim's rate and writes to dst after the path's delay.
// The delay line holds at most delayLine pieces: a path with a delay also
// has a bounded buffer.
func (p *Proxy) pump(ctx context.Context, dst, src net.Conn, lim *rate.Limiter, count *atomic.Int64) {
	size := 64 << 10
	if lim != nil {
		size = lim.Burst()
	}
	if p.opts.Delay <= 0 {
		buf := make([]byte, size)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if lim != nil && lim.WaitN(ctx, n) != nil {
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				if count != nil {
					count.Add(int64(n))
				}
			}
			if err != nil {
				return
			}
		}
	}
	const delayLine = 256
	line := make(chan piece, delayLine)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pc := range line {
			t := time.NewTimer(time.Until(pc.due))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			if _, err := dst.Write(pc.b); err != nil {
				return
			}
			if count != nil {
				count.Add(int64(len(pc.b)))
			}
		}
	}()
	defer func() { close(line); <-done }()
	for {
		buf := make([]byte, size)
		n, err := src.Read(buf)
		if n > 0 {
			if lim != nil && lim.WaitN(ctx, n) != nil {
				return
			}
			select {
			case line <- piece{b: buf[:n], due: time.Now().Add(p.opts.Delay)}:
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			return // EOF or a reset from either end: the connection's end
		}
	}
}
