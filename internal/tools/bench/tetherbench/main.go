// Command tetherbench measures the real tether binary end to end and prints
// the figures `make bench` reports: start to connected, keystroke echo
// round trip (alone and next to a flooding session), output throughput
// beside a raw pty baseline measured in the same run, 100 concurrent
// sessions, RSS idle and with 100 sessions, stop to shell gone, and file
// download/upload beside a local copy.
//
// The bench plays the server itself (a bare websocket endpoint), so the
// figures are the daemon's, not a relay's.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/link"
	"github.com/tether-agent/tether/internal/wire"
)

func main() {
	bin := flag.String("tether", "bin/tether", "tether binary to measure")
	keys := flag.Int("keys", 1000, "keystrokes for the echo round trip")
	mb := flag.Int("mb", 256, "MiB of output for the throughput run")
	pfOnly := flag.Bool("portforward-only", false, "measure only port forwarding")
	idleOnly := flag.Bool("idle-only", false, "measure only the idle daemon's wakeups and CPU")
	echoOnly := flag.Bool("echo-only", false, "measure only the keystroke echo and the output throughput")
	slowOnly := flag.Bool("slowlink-only", false, "measure only the echo beside a flood on slow links")
	slowKeys := flag.Int("slowkeys", 30, "keystrokes per path for the slow-link echo")
	flag.Parse()
	if spec := os.Getenv(relayEnv); spec != "" {
		if err := serveRelay(spec); err != nil {
			fmt.Fprintln(os.Stderr, "tetherbench relay:", err)
			os.Exit(1)
		}
		return
	}
	if os.Getenv(relayServerEnv) == "1" {
		if err := serveRelayEcho(); err != nil {
			fmt.Fprintln(os.Stderr, "tetherbench relay echo server:", err)
			os.Exit(1)
		}
		return
	}
	if os.Getenv(echoServerEnv) == "1" {
		if err := serveEcho(); err != nil {
			fmt.Fprintln(os.Stderr, "tetherbench echo server:", err)
			os.Exit(1)
		}
		return
	}
	if *slowOnly {
		if err := slowLinkRows(*bin, *slowKeys); err != nil {
			fmt.Fprintln(os.Stderr, "tetherbench:", err)
			os.Exit(1)
		}
		return
	}
	if *pfOnly {
		if err := portForwardBench(*bin); err != nil {
			fmt.Fprintln(os.Stderr, "tetherbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*bin, *keys, *mb, *slowKeys, *idleOnly, *echoOnly); err != nil {
		fmt.Fprintln(os.Stderr, "tetherbench:", err)
		os.Exit(1)
	}
}

// server is the device endpoint: one device connection at a time.
type server struct {
	url   string
	conns chan *devConn
}

type devConn struct {
	ws  *websocket.Conn
	in  chan *wire.ProtoMsg
	wmu sync.Mutex

	// While counting, frames are not decoded, only counted, so the
	// consumer costs what the raw pty baseline's consumer costs.
	counting atomic.Bool
	rawBytes atomic.Int64
	rawMsgs  atomic.Int64
	firstAt  atomic.Int64

	framesIn, framesOut atomic.Int64 // messages from / to the device
}

// counted records a frame of n bytes from the device.
func (d *devConn) counted(n int64) {
	d.framesIn.Add(1)
	d.rawBytes.Add(n)
	d.rawMsgs.Add(1)
	if d.counting.Load() {
		d.firstAt.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func (d *devConn) send(m *wire.ProtoMsg) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.framesOut.Add(1)
	return d.ws.WriteMessage(websocket.BinaryMessage, b)
}

func startServer() (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{url: "http://" + l.Addr().String(), conns: make(chan *devConn, 4)}
	up := websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	mux := http.NewServeMux()
	mux.HandleFunc(link.DevicePath, func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		ws.SetReadLimit(64 << 20)
		d := &devConn{ws: ws, in: make(chan *wire.ProtoMsg, 4096)}
		s.conns <- d
		go func() {
			defer close(d.in)
			for {
				// Bytes are counted in both modes: when counting starts,
				// this loop may already be inside ReadMessage, and the
				// frame it returns holds output of the measured command.
				if d.counting.Load() {
					_, r, err := ws.NextReader()
					if err != nil {
						return
					}
					n, err := io.Copy(io.Discard, r)
					if err != nil {
						return
					}
					d.counted(n)
					continue
				}
				_, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				d.counted(int64(len(b)))
				m, err := wire.Unmarshal(b)
				if err != nil {
					continue
				}
				d.in <- m
			}
		}()
	})
	go func() { _ = http.Serve(countingListener{l}, mux) }()
	return s, nil
}

type daemon struct {
	cmd *exec.Cmd
	dir string
}

func startDaemon(bin, serverURL string) (*daemon, error) {
	return launch(bin, "tetherbench-", "bench-token\n", func(dir string) map[string]interface{} {
		return map[string]interface{}{
			"ShellArguments": []string{},
			"ServerURL":      serverURL,
			"Sessions":       map[string]interface{}{"MaxPerUser": 128, "MaxTotal": 128, "StopGrace": "200ms"},
			// start → connected is the daemon's own start, not the
			// fleet's spread of first dials.
			"Reconnect": map[string]interface{}{"StartJitter": "0s"},
			// The bench reads the allocation counter here.
			"Metrics": map[string]interface{}{"Listen": "unix:" + filepath.Join(dir, "metrics.sock")},
		}
	})
}

// launch starts the daemon with a config of its own in a fresh directory:
// static auth with token, shells of the bench's user (nobody as root), warn
// logs, plus the keys extra returns for that directory.
func launch(bin, prefix, token string, extra func(dir string) map[string]interface{}) (*daemon, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	user := "nobody"
	if os.Geteuid() != 0 {
		user = os.Getenv("USER")
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(token), 0o600); err != nil {
		return nil, err
	}
	cfg := map[string]interface{}{
		"User": user, "ShellCommand": "/bin/sh",
		"Auth": map[string]interface{}{"Source": "static", "TokenFile": tok},
		"Log":  map[string]interface{}{"Level": "warn"},
	}
	for k, v := range extra(dir) {
		cfg[k] = v
	}
	b, _ := json.Marshal(cfg)
	conf := filepath.Join(dir, "tether.conf")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", conf, "-b", filepath.Join(dir, "none"), "daemon")
	// A runtime directory of its own, as systemd gives the unit: the
	// upload journal there is locked by one daemon at a time, and the
	// bench's daemons overlap as one stops and the next starts.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "RUNTIME_DIRECTORY=" + dir}
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GODEBUG", "GOMAXPROCS"} {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &daemon{cmd: cmd, dir: dir}, nil
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
	os.RemoveAll(d.dir)
}

func (d *daemon) metricsSock() string { return filepath.Join(d.dir, "metrics.sock") }

func (d *daemon) rssKB() int { return d.status("VmRSS") }

// status reads a number field of the daemon's /proc status: VmRSS and
// RssAnon in kB (RssAnon is what the kernel cannot reclaim; VmRSS is
// mostly the binary's file pages), Threads.
func (d *daemon) status(key string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func run(bin string, keys, mb, slowKeys int, idleOnly, echoOnly bool) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (run make build)", bin, err)
	}
	srv, err := startServer()
	if err != nil {
		return err
	}
	fmt.Printf("tether benchmark (%s)\n\n", bin)

	// Start to connected, median of 5.
	var starts []time.Duration
	for i := 0; i < 5; i++ {
		t0 := time.Now()
		d, err := startDaemon(bin, srv.url)
		if err != nil {
			return err
		}
		select {
		case c := <-srv.conns:
			starts = append(starts, time.Since(t0))
			c.ws.Close()
		case <-time.After(10 * time.Second):
			d.stop()
			return errors.New("daemon did not connect within 10 s")
		}
		d.stop()
	}
	sortDur(starts)
	row("start → connected (median of 5)", fmtDur(starts[2]), "target ≤ 100 ms")

	d, err := startDaemon(bin, srv.url)
	if err != nil {
		return err
	}
	defer d.stop()
	var c *devConn
	select {
	case c = <-srv.conns:
	case <-time.After(10 * time.Second):
		return errors.New("daemon did not connect")
	}
	time.Sleep(300 * time.Millisecond)
	rssIdle, anonIdle, thrIdle := d.rssKB(), d.status("RssAnon"), d.status("Threads")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := &bench{c: c, ctx: ctx}
	if !echoOnly {
		if err := b.idle(d.cmd.Process.Pid); err != nil || idleOnly {
			return err
		}
	}

	// Keystroke echo: the pty's line discipline echoes at a prompt, so the
	// round trip is websocket → daemon → pty → daemon → websocket.
	if err := b.open("echo1", "stty -icanon; "); err != nil {
		return err
	}
	if err := b.echoRows("echo1", fmt.Sprintf("keystroke echo p50 / p99 (%d keys)", keys), keys); err != nil {
		return err
	}
	if err := b.perKey(d, "echo1", keys); err != nil {
		return err
	}

	// The same next to a session flooding output; its floors are measured
	// while the flood goes on too, so they carry the same load.
	if err := b.open("flood", ""); err != nil {
		return err
	}
	if err := b.input("flood", "exec yes\n"); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	if err := b.echoRows("echo1", "keystroke echo p50 / p99 beside `yes`", keys); err != nil {
		return err
	}
	_ = b.stop("flood")

	// Output throughput against a raw pty in the same run.
	raw, err := rawPtyThroughput(mb)
	if err != nil {
		return err
	}
	var tput, frame float64
	before, after, calls, callsErr, err := b.measured(d, func() (err error) {
		tput, frame, err = b.throughput("echo1", mb)
		return err
	})
	if err != nil {
		return err
	}
	row(fmt.Sprintf("output throughput (%d MiB)", mb), fmt.Sprintf("%.1f MB/s", tput), fmt.Sprintf("raw pty %.1f MB/s → %.0f %% (target ≥ 75 %%); %.1f KiB/frame", raw, 100*tput/raw, frame/1024))
	per100 := float64(mb<<20) / 100e6
	cpu := (after.proc.CPU - before.proc.CPU).Seconds() / per100
	if rmbps, rcpu, err := relayFloor(mb); err == nil {
		row("daemon CPU per 100 MB of output", fmt.Sprintf("%.3f CPU s", cpu), fmt.Sprintf("floor: plain pty → socket copy %.3f CPU s (%.1f MB/s)", rcpu, rmbps))
	} else {
		row("daemon CPU per 100 MB of output", fmt.Sprintf("%.3f CPU s", cpu), "floor: "+err.Error())
	}
	sys := "perf: " + fmt.Sprint(callsErr)
	if callsErr == nil {
		sys = fmt.Sprintf("%.0f", float64(calls)/per100)
	}
	row("  per 100 MB: syscalls / context switches", sys+" / "+fmt.Sprintf("%.0f", float64(after.proc.Switches-before.proc.Switches)/per100),
		fmt.Sprintf("%.0f frames", float64(after.framesOut-before.framesOut)/per100))
	row("  per 100 MB: allocations / heap / GCs", fmt.Sprintf("%.0f / %.1f MB / %.0f", (after.heap.mallocs-before.heap.mallocs)/per100,
		(after.heap.bytes-before.heap.bytes)/per100/1e6, (after.heap.gcs-before.heap.gcs)/per100), "Go runtime counters")
	_ = b.stop("echo1")
	if echoOnly {
		return nil
	}

	// 100 concurrent sessions.
	t0 := time.Now()
	ok, err := b.openMany(100)
	if err != nil {
		return err
	}
	row("100 concurrent sessions", fmt.Sprintf("%d/100 in %s", ok, fmtDur(time.Since(t0))), "target 100/100 in < 1 s")
	time.Sleep(500 * time.Millisecond)
	rss100, anon100, thr100 := d.rssKB(), d.status("RssAnon"), d.status("Threads")
	row("daemon RSS idle / with 100 sessions", fmt.Sprintf("%.1f MB / %.1f MB", float64(rssIdle)/1024, float64(rss100)/1024), "target ≤ 8 MB / ≤ 16 MB")
	row("daemon RssAnon idle / with 100 sessions", fmt.Sprintf("%.1f MB / %.1f MB", float64(anonIdle)/1024, float64(anon100)/1024), "not reclaimable; VmRSS is mostly file pages")
	row("daemon threads idle / with 100 sessions", fmt.Sprintf("%d / %d", thrIdle, thr100), "flat: no thread per session")

	// Stop → shell gone.
	var stops []time.Duration
	for i := 0; i < 20; i++ {
		sid := fmt.Sprintf("many-%d", i)
		pid := b.pids[sid]
		t0 := time.Now()
		if err := b.stop(sid); err != nil {
			return err
		}
		for alive(pid) {
			if time.Since(t0) > 10*time.Second {
				return fmt.Errorf("shell %d survived its stop", pid)
			}
			time.Sleep(50 * time.Microsecond)
		}
		stops = append(stops, time.Since(t0))
	}
	sortDur(stops)
	row("stop → shell gone (median of 20)", fmtDur(stops[len(stops)/2]), "upstream ≥ 4 s")
	if err := b.fileTransfer(d, mb); err != nil {
		return err
	}
	if err := slowLinkRows(bin, slowKeys); err != nil {
		return err
	}
	return portForwardBench(bin)
}

// echoRows measures the keystroke echo of sid and, right after, its floors
// (the same load still on), and prints them with the targets: p50
// within 2x and p99 within 3x of the sum of the pty and websocket floors.
func (b *bench) echoRows(sid, label string, keys int) error {
	p50, p99, err := b.echo(sid, keys)
	if err != nil {
		return err
	}
	stop := b.discard()
	pty50, pty99, perr := ptyEchoFloor(keys)
	ws50, ws99, werr := wsEchoFloor(keys, false)
	re50, re99, rerr := wsEchoFloor(keys, true)
	stop()
	if err := errors.Join(perr, werr, rerr); err != nil {
		return fmt.Errorf("echo floors: %w", err)
	}
	t50, t99 := 2*(pty50+ws50), 3*(pty99+ws99)
	verdict := func(got, target time.Duration) string {
		if got <= target {
			return "met"
		}
		return "missed"
	}
	row(label, fmtDur(p50)+" / "+fmtDur(p99), fmt.Sprintf("target ≤ %s / ≤ %s (2× / 3× pty + websocket): %s / %s",
		fmtDur(t50), fmtDur(t99), verdict(p50, t50), verdict(p99, t99)))
	row("  floor: bare pty echo", fmtDur(pty50)+" / "+fmtDur(pty99), "same run, same load")
	row("  floor: websocket echo, other process", fmtDur(ws50)+" / "+fmtDur(ws99), "same run, same load")
	row("  floor: websocket → bare relay → pty", fmtDur(re50)+" / "+fmtDur(re99), "any agent's path, no protocol")
	return nil
}

// discard drops the device's frames until stop is called, so a flooding
// session keeps flooding while nothing else reads.
func (b *bench) discard() (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case _, ok := <-b.c.in:
				if !ok {
					return
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

func row(what, value, note string) {
	fmt.Printf("%-42s %-22s %s\n", what, value, note)
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func sortDur(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

func startPty(cmd *exec.Cmd) (*os.File, error) { return pty.Start(cmd) }

// rawPtyThroughput reads the same output straight from a pty.
func rawPtyThroughput(mb int) (float64, error) {
	cmd := exec.Command("head", "-c", strconv.Itoa(mb<<20), "/dev/zero")
	f, err := pty.Start(cmd)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	total := 0
	t0 := time.Now()
	for total < mb<<20 {
		n, err := f.Read(buf)
		total += n
		if err != nil {
			break
		}
	}
	el := time.Since(t0)
	_ = cmd.Wait()
	return float64(total) / el.Seconds() / 1e6, nil
}
