package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tether-agent/tether/internal/tools/bench/procstat"
)

// countingListener wraps every accepted connection so that the bytes the
// device sends and receives are counted as they cross the socket: the
// "bytes on the wire" of a keystroke, websocket framing included.
type countingListener struct{ net.Listener }

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countConn{Conn: c}, nil
}

// countConn counts the bytes read from and written to the device.
type countConn struct {
	net.Conn
	in, out atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
}

// costs is what the daemon and the wire spent between two samples.
type costs struct {
	framesIn, framesOut int64 // frames the daemon received / sent
	bytesIn, bytesOut   int64 // bytes on the wire, framing included
	proc                procstat.Sample
	rw                  int64 // read and write family syscalls (/proc/pid/io)
	heap                heap
}

func (b *bench) sampleCosts(d *daemon) (costs, error) {
	c := costs{framesIn: b.c.framesOut.Load(), framesOut: b.c.framesIn.Load()}
	if cc, ok := b.c.ws.UnderlyingConn().(*countConn); ok {
		c.bytesIn, c.bytesOut = cc.out.Load(), cc.in.Load()
	}
	var err error
	if c.proc, err = procstat.Read(d.cmd.Process.Pid); err != nil {
		return c, err
	}
	c.rw = d.ioSyscalls()
	c.heap, err = d.heap()
	return c, err
}

// perKey types n keys like echo does and prints what each cost: frames and
// bytes on the wire both ways, the daemon's syscalls (all of them, counted
// by perf's raw_syscalls tracepoint when perf can attach; the read/write
// family from /proc in any case), heap allocations (the Go runtime's
// counter, read over the metrics socket), context switches and CPU time.
func (b *bench) perKey(d *daemon, sid string, n int) error {
	// A scrape allocates in the daemon; measure one and take it off.
	h0, err := d.heap()
	if err != nil {
		return err
	}
	before, after, calls, callsErr, err := b.measured(d, func() error {
		_, _, err := b.echo(sid, n)
		return err
	})
	if err != nil {
		return err
	}
	scrape := before.heap.mallocs - h0.mallocs
	// echo ends the line with a newline and lets the shell answer it
	// (command not found, a prompt); that line is one more "keystroke"
	// whose cost is counted too, so divide by n+1.
	k := float64(n + 1)
	per := func(a, b int64) float64 { return float64(b-a) / k }
	row("per keystroke: frames in / out", fmt.Sprintf("%.2f / %.2f", per(before.framesIn, after.framesIn), per(before.framesOut, after.framesOut)), "websocket messages")
	row("per keystroke: bytes on the wire in / out", fmt.Sprintf("%.0f / %.0f", per(before.bytesIn, after.bytesIn), per(before.bytesOut, after.bytesOut)), "websocket framing included")
	if callsErr == nil {
		row("per keystroke: daemon syscalls", fmt.Sprintf("%.1f (%.1f read/write)", float64(calls)/k, per(before.rw, after.rw)), "perf raw_syscalls; read/write from /proc/pid/io")
	} else {
		row("per keystroke: daemon read/write syscalls", fmt.Sprintf("%.1f", per(before.rw, after.rw)), "all syscalls: "+callsErr.Error())
	}
	row("per keystroke: daemon heap allocations", fmt.Sprintf("%.1f", (after.heap.mallocs-before.heap.mallocs-scrape)/k), "go_memstats_mallocs_total")
	row("per keystroke: daemon CPU / switches", fmt.Sprintf("%.1f µs / %.1f", float64(after.proc.CPU-before.proc.CPU)/k/1e3,
		float64(after.proc.Switches-before.proc.Switches)/k), "all threads, schedstat")
	return nil
}

// measured runs f between two samples of the daemon's costs, counting its
// syscalls meanwhile (callsErr says why they could not be counted).
func (b *bench) measured(d *daemon, f func() error) (before, after costs, calls int64, callsErr, err error) {
	if before, err = b.sampleCosts(d); err != nil {
		return
	}
	sc := startSyscallCount(d.cmd.Process.Pid)
	if err = f(); err != nil {
		_, _ = sc.stop()
		return
	}
	calls, callsErr = sc.stop()
	after, err = b.sampleCosts(d)
	return
}

// ioSyscalls is the daemon's read and write family syscall count so far.
func (d *daemon) ioSyscalls() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "syscr" || k == "syscw") {
			x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			n += x
		}
	}
	return n
}

// heap is the daemon's allocation counters, read from its metrics socket.
type heap struct {
	mallocs, bytes, gcs float64
}

func (d *daemon) heap() (heap, error) {
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.metricsSock())
		}}}
	resp, err := c.Get("http://tether/metrics")
	if err != nil {
		return heap{}, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	var h heap
	want := map[string]*float64{
		"go_memstats_mallocs_total":     &h.mallocs,
		"go_memstats_alloc_bytes_total": &h.bytes,
		"go_gc_duration_seconds_count":  &h.gcs,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			if *p, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
				return h, fmt.Errorf("metrics: %s: %w", name, err)
			}
			found++
		}
	}
	if found != len(want) {
		return h, fmt.Errorf("metrics: %d of the %d Go heap series found", found, len(want))
	}
	return h, nil
}

// syscallCount counts a process's syscalls with perf's raw_syscalls
// tracepoint (cheap: no ptrace stop per call, unlike strace).
type syscallCount struct {
	cmd *exec.Cmd
	out bytes.Buffer
	err error
}

func startSyscallCount(pid int) *syscallCount {
	s := &syscallCount{}
	perf, err := exec.LookPath("perf")
	if err != nil {
		s.err = fmt.Errorf("perf not installed (Debian: linux-perf)")
		return s
	}
	s.cmd = exec.Command(perf, "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid))
	s.cmd.Stderr = &s.out
	if err := s.cmd.Start(); err != nil {
		s.err = fmt.Errorf("perf: %w", err)
		return s
	}
	time.Sleep(300 * time.Millisecond) // let it attach to every thread
	return s
}

func (s *syscallCount) stop() (int64, error) {
	if s.err != nil {
		return 0, s.err
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	_ = s.cmd.Wait()
	for _, line := range strings.Split(s.out.String(), "\n") {
		f := strings.Split(line, ",")
		if len(f) > 2 && f[2] == "raw_syscalls:sys_enter" {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("perf could not count syscalls: %q", strings.TrimSpace(line))
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("perf printed no count: %q", strings.TrimSpace(s.out.String()))
}

// relayEnv makes the bench binary run as the "plain copy" floor of the
// output path: it reads a pty the way the daemon does and writes what it
// read, unframed, to a loopback socket, then prints its own CPU time. What
// the daemon spends per byte beyond that is framing, masking and its own
// bookkeeping.
const relayEnv = "TETHERBENCH_RELAY"

func serveRelay(spec string) error {
	addr, size, ok := strings.Cut(spec, ",")
	if !ok {
		return fmt.Errorf("relay: want addr,bytes, got %q", spec)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	cmd := exec.Command("head", "-c", size, "/dev/zero")
	f, err := startPty(cmd)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr != nil {
			break // EIO once head exits
		}
	}
	_ = cmd.Wait()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Println(cpu.Nanoseconds())
	return nil
}

// relayFloor runs the relay for mb MiB and returns its throughput and CPU
// per 100 MB.
func relayFloor(mb int) (mbps, cpuPer100MB float64, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), relayEnv+"="+l.Addr().String()+","+strconv.Itoa(mb<<20))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	c, err := l.Accept()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 0, 0, err
	}
	buf := make([]byte, 64<<10)
	var total int64
	var t0 time.Time
	for {
		n, err := c.Read(buf)
		if n > 0 && t0.IsZero() {
			t0 = time.Now()
		}
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			c.Close()
			_ = cmd.Wait()
			return 0, 0, err
		}
	}
	el := time.Since(t0)
	c.Close()
	if err := cmd.Wait(); err != nil {
		return 0, 0, fmt.Errorf("relay: %w", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("relay printed %q: %w", out.String(), err)
	}
	return float64(total) / el.Seconds() / 1e6, float64(ns) / 1e9 / (float64(total) / 100e6), nil
}
