//go:build hil && hilbench

package hiltests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-agent/tether/internal/mockserver"
	"github.com/tether-agent/tether/internal/tools/bench/procstat"
)

// TestGuestBench measures what carrying terminal output costs tether on
// the emulated devices (the minimal guest of each architecture; default
// arm64 and armhf): a file in the guest's tmpfs is cat into a terminal
// session that the host consumes, and tether's CPU time for it is set
// next to what the cat itself spends writing the same data into the pty
// and what it spends writing it to /dev/null, all in the same guest in the
// same run. `make bench-guests` runs it; the build tag hilbench keeps it
// out of `make hil`.
//
// HIL_BENCH_MIB is the size of the data (default 16 MiB), HIL_BENCH_RUNS
// how many times each measurement is repeated (default 3; the median is
// reported, since emulated timing is noisy).
func TestGuestBench(t *testing.T) {
	mib := envInt(t, "HIL_BENCH_MIB", 16)
	runs := envInt(t, "HIL_BENCH_RUNS", 3)
	// The whole data goes through one user connection: lift the real
	// server's 8 MiB limit on it.
	cfg := rigConfig{arches: "arm64 armhf", sessionByteLimit: -1}
	forEachArchWith(t, "minimal", 30*time.Minute, cfg, func(r *rig) {
		r.steps(
			step{"connects", func() { r.waitConnected(3 * time.Minute) }},
			step{"bench", func() { guestBench(r, int64(mib)<<20, runs) }},
		)
	})
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

const (
	benchFile = "/tmp/bench.txt"
	// benchLine is the data's line, 63 characters and a newline: terminals
	// carry text, and a pty turns each newline into two bytes.
	benchLine = "May 14 09:21:07 gw kernel: [4123.876512] eth0: link up 1000Mbps"
	// devNullReps is how often the file is read for one /dev/null timing:
	// that cat costs little, and busybox time counts in 10 ms steps.
	devNullReps = 4
)

// benchRun is one repetition's figures; CPU times in seconds.
type benchRun struct {
	wall       time.Duration // command sent → end marker received, at the host
	received   int64         // bytes of shell output the host counted
	tether     float64       // tether's utime+stime
	tetherSys  float64       // of which stime
	reads      int64         // tether's read and write system calls
	writes     int64
	catPty     float64 // the cat's user+sys, writing into the session's pty
	catElapsed float64 // the cat's wall time in the guest
	guestBusy  float64 // the guest's non-idle share of its one CPU meanwhile
	hostQEMU   float64 // QEMU's CPU time at the host over the wall time
	catNull    float64 // cat >/dev/null user+sys, per read of the file
	relay      timing  // the plain relay's own user and sys (no elapsed)
}

func guestBench(r *rig, size int64, runs int) {
	if len(benchLine) != 63 {
		r.t.Fatalf("benchLine is %d characters, want 63", len(benchLine))
	}
	term := r.open(admin)
	lines := size / int64(len(benchLine)+1)

	r.t.Logf("writing %d MiB (%d lines) into %s", size>>20, lines, benchFile)
	got := r.valueWithin(term, "data", fmt.Sprintf(
		`yes '%s' | head -c %d >%s; echo "data=$(wc -c <%[3]s) $(wc -l <%[3]s)"`, benchLine, size, benchFile), 10*time.Minute)
	if want := fmt.Sprintf("%d %d", size, lines); strings.Join(strings.Fields(got), " ") != want {
		r.t.Fatalf("%s holds %q bytes and lines, want %q", benchFile, got, want)
	}

	pid := r.value(term, "pid", `echo "pid=$(pidof tether)"`)
	if _, err := strconv.Atoi(pid); err != nil {
		r.t.Fatalf("pidof tether printed %q, want one pid", pid)
	}
	tck := clockTicks(r, term)
	cpus := r.value(term, "cpus", `echo "cpus=$(nproc)"`)
	// A pty with default termios (onlcr) sends \r\n for every \n.
	onlcr := !strings.Contains(" "+r.run(term, "stty -a")+" ", " -onlcr ")
	wire, crlf := size, ""
	if onlcr {
		wire, crlf = size+lines, ", \\n as \\r\\n"
	}

	relay := installRelay(r, term)
	sink := startSink(r)
	all := make([]benchRun, 0, runs)
	for i := range runs {
		b := benchSession(r, term, pid, tck, wire)
		b.catNull = benchDevNull(r, term)
		b.relay = benchRelay(r, term, relay, sink, wire)
		r.t.Logf("run %d: %s wall %.2f s (cat's own %.2f s), %d bytes received; CPU-s tether %.2f (sys %.2f; %d reads, %d writes), cat into the pty %.2f; guest busy %.0f %%; QEMU %.0f %% of a host CPU; cat >/dev/null %.3f CPU-s; plain pty → websocket relay %.2f CPU-s (sys %.2f)",
			i+1, r.spec.Arch, b.wall.Seconds(), b.catElapsed, b.received, b.tether, b.tetherSys, b.reads, b.writes,
			b.catPty, 100*b.guestBusy, 100*b.hostQEMU, b.catNull, b.relay.user+b.relay.sys, b.relay.sys)
		all = append(all, b)
	}
	r.rss = r.rssOf(term, "pidof tether")

	med := func(f func(benchRun) float64) float64 {
		v := make([]float64, len(all))
		for i, b := range all {
			v[i] = f(b)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	mb := float64(size) / 1e6
	walls := make([]string, len(all))
	for i, b := range all {
		walls[i] = fmt.Sprintf("%.2f", mb/b.wall.Seconds())
	}
	wall := med(func(b benchRun) float64 { return b.wall.Seconds() })
	tether := med(func(b benchRun) float64 { return b.tether })
	tetherSys := med(func(b benchRun) float64 { return b.tetherSys })
	reads := med(func(b benchRun) float64 { return float64(b.reads) })
	writes := med(func(b benchRun) float64 { return float64(b.writes) })
	catPty := med(func(b benchRun) float64 { return b.catPty })
	catNull := med(func(b benchRun) float64 { return b.catNull })
	relayCPU := med(func(b benchRun) float64 { return b.relay.user + b.relay.sys })
	busy := med(func(b benchRun) float64 { return b.guestBusy })
	host := med(func(b benchRun) float64 { return b.hostQEMU })
	ratio, overRelay := "∞", "∞"
	if catPty > 0 {
		ratio = fmt.Sprintf("%.1f", tether/catPty)
	}
	if relayCPU > 0 {
		overRelay = fmt.Sprintf("%.2f (goal ≤ 1.5)", tether/relayCPU)
	}
	r.t.Logf("BENCH-RESULT %s minimal: %d MiB of text (%.1f MB on the wire%s) through the terminal at %.2f MB/s (runs: %s); "+
		"tether %.3f CPU-s/MB (sys %.3f; %.0f reads + %.0f writes per MB); plain pty → websocket relay %.3f CPU-s/MB; tether/relay %s; cat into the pty %.3f CPU-s/MB; cat >/dev/null %.4f CPU-s/MB; tether/cat %s; "+
		"guest CPU busy %.0f %% (of %s), QEMU %.0f %% of a host CPU; medians of %d; clock %s; tether RSS after %s",
		r.spec.Arch, size>>20, float64(wire)/1e6, crlf,
		mb/wall, strings.Join(walls, " "),
		tether/mb, tetherSys/mb, reads/mb, writes/mb, relayCPU/mb, overRelay, catPty/mb, catNull/mb, ratio,
		100*busy, cpus, 100*host, len(all), tck, r.rss)
}

// benchSession cats the file into the session and measures it.
func benchSession(r *rig, term *mockserver.Terminal, pid string, tck clock, wire int64) benchRun {
	r.t.Helper()
	before := cpuSample(r, term, pid)
	marker := fmt.Sprintf("__bench_%d__", time.Now().UnixNano())
	half := len(marker) / 2
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Minute)
	defer cancel()
	q0 := qemuCPU(r)
	start := time.Now()
	// The marker is printed in two halves, so that the echoed command
	// line does not contain it.
	fmt.Fprintf(term, "time -o /tmp/cat.time -f '%%e %%U %%S' cat %s; printf '%%s%%s\\n' '%s' '%s'\n",
		benchFile, marker[:half], marker[half:])
	n, err := term.CountUntil(ctx, marker)
	wall := time.Since(start)
	q1 := qemuCPU(r)
	if err != nil {
		r.t.Fatalf("cat of %s through the terminal: %v after %d bytes", benchFile, err, n)
	}
	after := cpuSample(r, term, pid)
	// What came besides the data: the echoed command line (wrapped at 80
	// columns) and the marker.
	if n < wire || n > wire+4096 {
		r.t.Fatalf("the host received %d bytes for %d bytes of output: data lost or added", n, wire)
	}
	cat := busyboxTime(r, term, "/tmp/cat.time")
	return benchRun{
		wall:       wall,
		received:   n,
		tether:     tck.seconds(after.utime + after.stime - before.utime - before.stime),
		tetherSys:  tck.seconds(after.stime - before.stime),
		reads:      after.syscr - before.syscr,
		writes:     after.syscw - before.syscw,
		catPty:     cat.user + cat.sys,
		catElapsed: cat.elapsed,
		guestBusy:  float64(after.busy-before.busy) / float64(after.total-before.total),
		hostQEMU:   (q1 - q0).Seconds() / wall.Seconds(),
	}
}

// benchDevNull times cat of the file to /dev/null; CPU seconds per read.
func benchDevNull(r *rig, term *mockserver.Terminal) float64 {
	r.t.Helper()
	r.valueWithin(term, "done", fmt.Sprintf(
		`time -o /tmp/null.time -f '%%e %%U %%S' sh -c 'for i in $(seq %d); do cat %s; done >/dev/null'; echo done=1`,
		devNullReps, benchFile), 10*time.Minute)
	t := busyboxTime(r, term, "/tmp/null.time")
	return (t.user + t.sys) / devNullReps
}

// qemuCPU is the QEMU process's CPU time at the host, all its threads.
// Emulated time runs with the host's clock: when other work on the host
// keeps QEMU from a CPU, the guest counts the wait as CPU time of whatever
// it was running, so a share well below 100 % marks a run that the host
// slowed down.
func qemuCPU(r *rig) time.Duration {
	r.t.Helper()
	s, err := procstat.Read(r.g.cmd.Process.Pid)
	if err != nil {
		r.t.Fatalf("QEMU's CPU time: %v", err)
	}
	return s.CPU
}

type timing struct{ elapsed, user, sys float64 }

// busyboxTime reads what `time -f '%e %U %S' -o path` wrote.
func busyboxTime(r *rig, term *mockserver.Terminal, path string) timing {
	r.t.Helper()
	v := strings.Fields(r.value(term, "t", fmt.Sprintf(`echo "t=$(cat %s)"`, path)))
	var x [3]float64
	ok := len(v) == len(x)
	for i := 0; ok && i < len(x); i++ {
		var err error
		x[i], err = strconv.ParseFloat(v[i], 64)
		ok = err == nil
	}
	if !ok {
		r.t.Fatalf("%s holds %q, want busybox time's \"elapsed user sys\"", path, v)
	}
	return timing{elapsed: x[0], user: x[1], sys: x[2]}
}

// sample is tether's counters — utime and stime from /proc/PID/stat (all
// its threads, in clock ticks), read and write system calls from
// /proc/PID/io — and the guest's non-idle and total time (/proc/stat,
// ticks), which also hold what the kernel spends for the pty and the
// network outside any process.
type sample struct{ utime, stime, syscr, syscw, busy, total int64 }

func cpuSample(r *rig, term *mockserver.Terminal, pid string) sample {
	r.t.Helper()
	v := r.value(term, "s", fmt.Sprintf(
		`echo s=$(cut -d' ' -f14,15 /proc/%[1]s/stat) $(awk '/^sysc[rw]:/ {print $2}' /proc/%[1]s/io) $(head -n1 /proc/stat)`, pid))
	f := strings.Fields(v)
	// utime stime syscr syscw "cpu" user nice system idle iowait irq softirq steal ...
	const c = 4
	if len(f) < c+9 || f[c] != "cpu" {
		r.t.Fatalf("tether's and the guest's counters: unexpected %q", v)
	}
	n := make([]int64, 0, len(f))
	for i, s := range f {
		if i == c {
			continue
		}
		x, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			r.t.Fatalf("counters %q: %v", v, err)
		}
		n = append(n, x)
	}
	// The guest's total without guest and guest_nice, which user holds.
	var total int64
	for _, x := range n[c : c+8] {
		total += x
	}
	idle := n[c+3] + n[c+4]
	return sample{utime: n[0], stime: n[1], syscr: n[2], syscw: n[3], busy: total - idle, total: total}
}

// clock is the guest's clock tick rate and where it was read.
type clock struct {
	hz     int64
	source string
}

func (c clock) seconds(ticks int64) float64 { return float64(ticks) / float64(c.hz) }

func (c clock) String() string { return fmt.Sprintf("%d ticks/s (%s)", c.hz, c.source) }

// atClkTck is the auxiliary vector's entry for sysconf(_SC_CLK_TCK).
const atClkTck = 17

// clockTicks reads the tick rate of /proc's times. Busybox has no getconf,
// so it is read where libc gets it: AT_CLKTCK in the auxiliary vector the
// kernel hands a process (here od's own).
func clockTicks(r *rig, term *mockserver.Terminal) clock {
	r.t.Helper()
	word := 8
	if r.spec.Arch == "armhf" {
		word = 4
	}
	v := r.value(term, "auxv", fmt.Sprintf(`echo auxv=$(od -An -v -t u%d /proc/self/auxv)`, word))
	f := strings.Fields(v)
	for i := 0; i+1 < len(f); i += 2 {
		typ, err1 := strconv.ParseInt(f[i], 10, 64)
		val, err2 := strconv.ParseInt(f[i+1], 10, 64)
		if err1 != nil || err2 != nil {
			break
		}
		if typ == atClkTck && val > 0 {
			return clock{hz: val, source: "AT_CLKTCK"}
		}
	}
	r.t.Fatalf("no AT_CLKTCK in the guest's auxiliary vector: %q", v)
	return clock{}
}

// relayPath is where the plain relay is put in the guest.
const relayPath = "/tmp/ptyrelay"

// installRelay builds internal/tools/bench/ptyrelay statically for the
// guest's architecture and uploads it through tether's file transfer.
func installRelay(r *rig, term *mockserver.Terminal) string {
	r.t.Helper()
	goarch, goarm := r.spec.Arch, ""
	switch r.spec.Arch {
	case "armhf":
		goarch, goarm = "arm", "7"
	case "armel":
		goarch, goarm = "arm", "5"
	}
	bin := filepath.Join(r.t.TempDir(), "ptyrelay")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../../tools/bench/ptyrelay")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm)
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("building the relay for %s: %v\n%s", r.spec.Arch, err, out)
	}
	f, err := os.Open(bin)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Minute)
	defer cancel()
	if err := mockserver.UploadFile(ctx, r.url, r.jwt(admin), r.dev.ID(), relayPath, "ptyrelay", f, nil, nil); err != nil {
		r.t.Fatalf("uploading the relay: %v", err)
	}
	r.run(term, "chmod 755 "+relayPath)
	return relayPath
}

// sink is the relay's far end on the host: a websocket endpoint that
// counts the bytes of each connection and hands the count over when the
// relay closes it.
type sink struct {
	url    string // as the guest reaches it
	counts chan int64
}

func startSink(r *rig) *sink {
	r.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	s := &sink{url: fmt.Sprintf("ws://10.0.2.2:%d/sink", l.Addr().(*net.TCPAddr).Port), counts: make(chan int64, 4)}
	up := websocket.Upgrader{ReadBufferSize: 64 << 10}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		var n int64
		for {
			_, rd, err := ws.NextReader()
			if err != nil {
				s.counts <- n
				return
			}
			m, _ := io.Copy(io.Discard, rd)
			n += m
		}
	})}
	go func() { _ = srv.Serve(l) }()
	r.root.Cleanup(func() { srv.Close() })
	return s
}

// benchRelay runs the plain relay on the same data in the same guest and
// returns its own CPU time (the cat's is not in it).
func benchRelay(r *rig, term *mockserver.Terminal, relay string, s *sink, wire int64) timing {
	r.t.Helper()
	v := strings.Fields(r.valueWithin(term, "relaycpu", fmt.Sprintf("time -o /tmp/relay.time -f '%%e %%U %%S' %s %s cat %s", relay, s.url, benchFile), 10*time.Minute))
	whole := busyboxTime(r, term, "/tmp/relay.time")
	var n int64
	select {
	case n = <-s.counts:
	case <-time.After(time.Minute):
		r.t.Fatal("the relay's sink saw no end")
	}
	if n != wire {
		r.t.Fatalf("the relay carried %d bytes of %d", n, wire)
	}
	if len(v) != 4 {
		r.t.Fatalf("relaycpu=%q: want \"user sys reads frames\"", v)
	}
	r.t.Logf("relay: %s pty reads, %s frames; wall %.2f s, with its cat %.2f user + %.2f sys", v[2], v[3], whole.elapsed, whole.user, whole.sys)
	u, err1 := strconv.ParseFloat(v[0], 64)
	y, err2 := strconv.ParseFloat(v[1], 64)
	if err1 != nil || err2 != nil {
		r.t.Fatalf("relaycpu=%q: %v %v", v, err1, err2)
	}
	return timing{user: u, sys: y}
}
