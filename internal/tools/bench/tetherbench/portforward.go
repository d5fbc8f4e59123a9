package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// Port forwarding is measured through the mock server, with mender-cli's
// way of talking (mockserver.PortForward), next to a direct loopback
// connection in the same run; a delay line between the daemon and the
// server adds a round trip like a real link's.

// pfDevice names a fresh device per daemon, so a run never meets the
// previous daemon's connection on its way out.
var pfDevice atomic.Int64

func pfDeviceID() string { return fmt.Sprintf("0e0d0c0b-0a09-4807-8605-%012d", pfDevice.Add(1)) }

// delayProxy relays TCP to target, holding every chunk back by oneWay in
// each direction without limiting the bandwidth.
type delayProxy struct {
	l      net.Listener
	target string
	oneWay time.Duration
	wg     sync.WaitGroup
}

func startDelayProxy(target string, rtt time.Duration) (*delayProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{l: l, target: target, oneWay: rtt / 2}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	return p, nil
}

type chunk struct {
	at   time.Time
	data []byte
}

func (p *delayProxy) pipe(from, to net.Conn) {
	defer p.wg.Done()
	q := make(chan chunk, 1<<14)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := from.Read(b)
			if n > 0 {
				q <- chunk{time.Now().Add(p.oneWay), b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := to.Write(c.data); err != nil {
			break
		}
	}
	from.Close()
	to.Close()
	for range q {
	}
}

func (p *delayProxy) close() { p.l.Close() }

func (p *delayProxy) url() string { return "http://" + p.l.Addr().String() }

func startPFDaemon(bin, serverURL, token string, pf map[string]interface{}) (*daemon, error) {
	return launch(bin, "tetherbench-pf-", token, func(string) map[string]interface{} {
		return map[string]interface{}{"ServerURL": serverURL, "PortForward": pf}
	})
}

// source and sink are the destinations on the device's side.
func serveLoop(handle func(net.Conn)) (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l, nil
}

var zeros = make([]byte, 64<<10)

func source(c net.Conn) {
	for {
		if _, err := c.Write(zeros); err != nil {
			return
		}
	}
}

// download reads from addr for d and returns MB/s.
func download(addr string, d time.Duration) (float64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	// The first byte starts the clock: the dial is not throughput.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		return 0, err
	}
	t0 := time.Now()
	_ = c.SetReadDeadline(t0.Add(d))
	var total int64
	for {
		n, err := c.Read(buf)
		total += int64(n)
		if err != nil {
			break
		}
	}
	return float64(total) / time.Since(t0).Seconds() / 1e6, nil
}

// upload writes to addr for d and returns what the sink received, MB/s.
func upload(addr string, sunk *atomic.Int64, d time.Duration) (float64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	// Wait for the connection to carry data before starting the clock.
	start := sunk.Load()
	if _, err := c.Write(zeros[:1]); err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(30 * time.Second); sunk.Load() == start; {
		if time.Now().After(deadline) {
			return 0, errors.New("no data reached the sink")
		}
		time.Sleep(time.Millisecond)
	}
	base := sunk.Load()
	t0 := time.Now()
	_ = c.SetWriteDeadline(t0.Add(d))
	for {
		if _, err := c.Write(zeros); err != nil {
			break
		}
	}
	el := time.Since(t0)
	return float64(sunk.Load()-base) / el.Seconds() / 1e6, nil
}

type pfRun struct {
	name   string
	rtt    time.Duration
	config map[string]interface{}
}

func portForwardBench(bin string) error {
	srv := mockserver.New(mockserver.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer srv.Close()
	src, err := serveLoop(source)
	if err != nil {
		return err
	}
	defer src.Close()
	var sunk atomic.Int64
	sink, err := serveLoop(func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			sunk.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	defer sink.Close()

	direct, err := download(src.Addr().String(), time.Second)
	if err != nil {
		return err
	}
	row("port forward: direct loopback download", fmt.Sprintf("%.0f MB/s", direct), "same run, no daemon")

	upstreamLike := map[string]interface{}{"Window": 1, "ReadSize": 4096}
	defaults := map[string]interface{}{}
	runs := []pfRun{
		{"window 1 × 4 KiB (as upstream)", 0, upstreamLike},
		{"default (window 8 × 16 KiB)", 0, defaults},
		{"window 1 × 4 KiB (as upstream)", 50 * time.Millisecond, upstreamLike},
		{"window 8 × 4 KiB", 50 * time.Millisecond, map[string]interface{}{"Window": 8, "ReadSize": 4096}},
		{"default (window 8 × 16 KiB)", 50 * time.Millisecond, defaults},
		{"window 16 × 64 KiB", 50 * time.Millisecond, map[string]interface{}{"Window": 16, "ReadSize": 65536}},
	}
	for _, r := range runs {
		down, up, err := pfMeasure(bin, srv, url, r, src.Addr().String(), sink.Addr().String(), &sunk)
		if err != nil {
			return fmt.Errorf("port forward %s, rtt %v: %w", r.name, r.rtt, err)
		}
		row(fmt.Sprintf("  %s, rtt %s", r.name, fmtDur(r.rtt)), fmt.Sprintf("↓ %.2f MB/s ↑ %.2f MB/s", down, up), "download through the device / upload (mender-cli: 1 × 4 KiB up)")
	}
	perConn, err := pfMemory(bin, srv, url)
	if err != nil {
		return err
	}
	row("port forward: daemon RSS per connection", fmt.Sprintf("%.1f KiB", perConn), "200 open tcp connections, default config")
	return nil
}

func pfSession(bin string, srv *mockserver.Server, url string, rtt time.Duration, cfg map[string]interface{}) (*daemon, *mockserver.PortForward, func(), error) {
	proxy, err := startDelayProxy(url[len("http://"):], rtt)
	if err != nil {
		return nil, nil, nil, err
	}
	id := pfDeviceID()
	d, err := startPFDaemon(bin, proxy.url(), srv.IssueDeviceToken(id), cfg)
	if err != nil {
		proxy.close()
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cleanup := func() { d.stop(); proxy.close() }
	if _, err := srv.WaitDevice(ctx, id); err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	jwt, err := mockserver.Login(ctx, url, mockserver.DefaultUser, mockserver.DefaultPassword)
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	pf, err := mockserver.OpenPortForward(ctx, url, jwt, id, func(f string, a ...any) {
		// Both ends closing at once makes the client's own stop reach a
		// connection the device already ended ("unknown connection", as
		// upstream answers): expected when 200 connections close, not news.
		if msg := fmt.Sprintf(f, a...); strings.Contains(f, "error") && !strings.HasSuffix(msg, "unknown connection") {
			fmt.Fprintln(os.Stderr, "tetherbench: "+msg)
		}
	})
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	return d, pf, func() { pf.Close(); cleanup() }, nil
}

func pfMeasure(bin string, srv *mockserver.Server, url string, r pfRun, srcAddr, sinkAddr string, sunk *atomic.Int64) (down, up float64, err error) {
	_, pf, cleanup, err := pfSession(bin, srv, url, r.rtt, r.config)
	if err != nil {
		return 0, 0, err
	}
	defer cleanup()
	forward := func(target string) (string, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		_, port, _ := net.SplitHostPort(target)
		var p uint16
		fmt.Sscan(port, &p)
		pf.ServeTCP(l, "127.0.0.1", p)
		return l.Addr().String(), nil
	}
	dl, err := forward(srcAddr)
	if err != nil {
		return 0, 0, err
	}
	ul, err := forward(sinkAddr)
	if err != nil {
		return 0, 0, err
	}
	if down, err = download(dl, 3*time.Second); err != nil {
		return 0, 0, err
	}
	up, err = upload(ul, sunk, 3*time.Second)
	return down, up, err
}

func pfMemory(bin string, srv *mockserver.Server, url string) (float64, error) {
	d, pf, cleanup, err := pfSession(bin, srv, url, 0, map[string]interface{}{"MaxConnections": 256, "MaxTotal": 256})
	if err != nil {
		return 0, err
	}
	defer cleanup()
	echo, err := serveLoop(func(c net.Conn) { _, _ = io.Copy(c, c) })
	if err != nil {
		return 0, err
	}
	defer echo.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	pf.ServeTCP(l, "127.0.0.1", uint16(echo.Addr().(*net.TCPAddr).Port))
	// One connection first, so what is loaded once is not counted.
	warm, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, err
	}
	defer warm.Close()
	one := make([]byte, 1)
	if _, err := warm.Write(one); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(warm, one); err != nil {
		return 0, err
	}
	time.Sleep(300 * time.Millisecond)
	before := d.rssKB()
	const n = 200
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return 0, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(one); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, one); err != nil {
			return 0, err
		}
	}
	time.Sleep(300 * time.Millisecond)
	return float64(d.rssKB()-before) / n, nil
}
