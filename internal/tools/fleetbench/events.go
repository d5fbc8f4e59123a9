package fleetbench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/reconnect"
	"github.com/tether-agent/tether/internal/tools/bench/procstat"
	"github.com/tether-agent/tether/internal/tools/fleetsim"
)

// Figures are one event's measurements (or the simulator's).
type Figures struct {
	// PeakPer100ms is the most device-endpoint requests the server got
	// in any 100 ms (accepted or refused) from its return on.
	PeakPer100ms int
	// DialsPerDevice counts every dial from the event on: accepted ones
	// (the server's log) and failed ones (the daemons' logs), over N.
	DialsPerDevice float64
	// P50, P99, Last: when devices were back after the server's return.
	P50, P99, Last time.Duration
	// Back is how many devices were back.
	Back int
}

// Result is one event: the real fleet's figures, the simulator's for the
// same fleet and rules (the median of 5 seeds, and their range), and the
// server's CPU while the fleet came back.
type Result struct {
	Event       string
	N           int
	Real        Figures
	Sim         Figures
	SimPeakLo   int
	SimPeakHi   int
	ServerCPU   time.Duration
	Window      time.Duration // the server's return to the last device back
	RetryAfters int           // 503s the server answered
	// Note says how near one instant the event's action was.
	Note string
	// Connects are the server's log from the event's start.
	Connects []Connect
	Err      error
}

// Policy is the reconnect policy the daemons run: the defaults with
// Options.Reconnect on top.
func (f *Fleet) Policy() (reconnect.Policy, error) {
	d := config.Default().Reconnect
	p := reconnect.Policy{Base: d.BackoffBase.Duration(), Max: d.BackoffMax.Duration(),
		FirstJitter: d.FirstJitter.Duration(), StartJitter: d.StartJitter.Duration()}
	for k, v := range f.opts.Reconnect {
		dur, err := time.ParseDuration(v)
		if err != nil {
			return p, fmt.Errorf("reconnect key %s: %w", k, err)
		}
		switch k {
		case "BackoffBase":
			p.Base = dur
		case "BackoffMax":
			p.Max = dur
		case "FirstJitter":
			p.FirstJitter = dur
		case "StartJitter":
			p.StartJitter = dur
		default:
			return p, fmt.Errorf("reconnect key %s: not one the simulator knows", k)
		}
	}
	return p, nil
}

// simulate runs the simulator for the fleet's size and rules with 5 seeds.
func (f *Fleet) simulate(s fleetsim.Scenario, r *Result) {
	p, err := f.Policy()
	if err != nil {
		r.Err = err
		return
	}
	var runs []fleetsim.Result
	for seed := uint64(1); seed <= 5; seed++ {
		runs = append(runs, fleetsim.Run(p, s, f.opts.N, seed))
	}
	med := func(get func(fleetsim.Result) float64) float64 {
		v := make([]float64, len(runs))
		for i, x := range runs {
			v[i] = get(x)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	r.Sim = Figures{
		PeakPer100ms:   int(med(func(x fleetsim.Result) float64 { return float64(x.PeakUpPer100ms) })),
		DialsPerDevice: med(func(x fleetsim.Result) float64 { return float64(x.Dials) / float64(f.opts.N) }),
		P50:            time.Duration(med(func(x fleetsim.Result) float64 { return float64(x.P50) })),
		P99:            time.Duration(med(func(x fleetsim.Result) float64 { return float64(x.P99) })),
		Last:           time.Duration(med(func(x fleetsim.Result) float64 { return float64(x.Last) })),
		Back:           f.opts.N,
	}
	r.SimPeakLo, r.SimPeakHi = runs[0].PeakUpPer100ms, runs[0].PeakUpPer100ms
	for _, x := range runs {
		r.SimPeakLo = min(r.SimPeakLo, x.PeakUpPer100ms)
		r.SimPeakHi = max(r.SimPeakHi, x.PeakUpPer100ms)
	}
}

// serverCPU samples the server's CPU time before an event's action.
func (f *Fleet) serverCPU() procstat.Sample {
	s, _ := procstat.Read(f.ServerPID())
	return s
}

// measure fills r.Real from the server's log and the daemons' logs:
// dials from start on, the server's view from back on (its return).
func (f *Fleet) measure(ctx context.Context, r *Result, start, ret time.Time, limit time.Duration, cpu0 procstat.Sample) {
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// From start, not ret: a restarted server may take connects before
	// the bench has read its address line; they count as at its return.
	cs, err := f.WaitBack(wctx, start)
	end := time.Now()
	if all, err := f.Connects(start); err == nil {
		r.Connects = all
	}
	if err != nil {
		r.Err = err
	}
	cpu1, err := procstat.Read(f.ServerPID())
	if err != nil {
		r.Err = err
	}
	r.ServerCPU = cpu1.CPU - cpu0.CPU
	bins := map[int64]int{}
	first := map[string]time.Duration{}
	ok := 0
	for _, c := range cs {
		since := max(0, c.At.Sub(ret))
		bins[int64(since/(100*time.Millisecond))]++
		switch c.Status {
		case 101:
			ok++
			if _, seen := first[c.Device]; !seen {
				first[c.Device] = since
			}
		case 503:
			r.RetryAfters++
		}
	}
	for _, n := range bins {
		r.Real.PeakPer100ms = max(r.Real.PeakPer100ms, n)
	}
	back := make([]time.Duration, 0, len(first))
	for _, d := range first {
		back = append(back, d)
	}
	sort.Slice(back, func(i, j int) bool { return back[i] < back[j] })
	r.Real.Back = len(back)
	if len(back) > 0 {
		// Percentiles of the whole fleet: a device not back counts as
		// not back, so with some missing p99 and last are unknown.
		idx := func(q int) int { return min(len(back)-1, f.opts.N*q/100) }
		r.Real.P50, r.Real.P99, r.Real.Last = back[idx(50)], back[idx(99)], back[len(back)-1]
		r.Window = back[len(back)-1]
	}
	r.Real.DialsPerDevice = float64(ok+f.FailedDials(start, end.Add(time.Second))) / float64(f.opts.N)
}

// Boot starts the fleet's daemons in one instant, the server up (down
// for the first down when down > 0), and measures the first connects.
func (f *Fleet) Boot(ctx context.Context, name string, down time.Duration) Result {
	r := Result{Event: name, N: f.opts.N}
	f.StopDaemons()
	if down > 0 {
		f.StopServer()
	} else if f.ServerPID() == 0 {
		if r.Err = f.StartServer(); r.Err != nil {
			return r
		}
	}
	f.progress("%s: starting %d daemons at the gate", name, f.opts.N)
	if r.Err = f.StartDaemons(); r.Err != nil {
		return r
	}
	time.Sleep(time.Duration(f.opts.N) * time.Millisecond) // the shells reach the gate
	cpu0 := f.serverCPU()
	start := time.Now()
	f.Release()
	ret := start
	if down > 0 {
		time.Sleep(down)
		if r.Err = f.StartServer(); r.Err != nil {
			return r
		}
		ret = time.Now()
		cpu0 = f.serverCPU()
	}
	p, _ := f.Policy()
	f.measure(ctx, &r, start, ret, p.Max+down+time.Duration(f.opts.N)*20*time.Millisecond+30*time.Second, cpu0)
	f.simulate(fleetsim.Scenario{Boot: true, Down: ret.Sub(start)}, &r)
	return r
}

// Ready waits until every daemon is connected to a live server.
func (f *Fleet) Ready(ctx context.Context, since time.Time) error {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	_, err := f.WaitBack(wctx, since)
	return err
}

// Drop makes the server close every device socket and stay up (a).
func (f *Fleet) Drop(ctx context.Context) Result {
	r := Result{Event: "server closes every socket, stays up", N: f.opts.N}
	// Links up for longer than the reconnect rules' 10 s count as
	// long-lived, as in the field.
	time.Sleep(11 * time.Second)
	cpu0 := f.serverCPU()
	start := time.Now()
	if r.Err = f.CloseDeviceSockets(); r.Err != nil {
		return r
	}
	p, _ := f.Policy()
	f.measure(ctx, &r, start, start, p.Max+30*time.Second, cpu0)
	f.simulate(fleetsim.Scenario{}, &r)
	return r
}

// Outage stops the server for down and starts it again (b); with extra
// server flags it comes back with them (c).
func (f *Fleet) Outage(ctx context.Context, name string, down time.Duration, sim fleetsim.Scenario, extra ...string) Result {
	r := Result{Event: name, N: f.opts.N}
	time.Sleep(11 * time.Second)
	start := time.Now()
	f.StopServer()
	if d := time.Until(start.Add(down)); d > 0 {
		time.Sleep(d)
	}
	if r.Err = f.StartServer(extra...); r.Err != nil {
		return r
	}
	ret := time.Now()
	cpu0 := f.serverCPU()
	p, _ := f.Policy()
	limit := p.Max + 30*time.Second
	if sim.Rate > 0 {
		limit += time.Duration(float64(f.opts.N)/sim.Rate*float64(time.Second)) + 2*sim.LimitRetryAfter
	}
	f.measure(ctx, &r, start, ret, limit, cpu0)
	sim.Down = ret.Sub(start)
	f.simulate(sim, &r)
	return r
}

// Rotate rewrites every daemon's token file at once (d). A fleet with
// inline tokens is first replaced by one with token files, each daemon as
// a user of its own (uidBase+i) so that each file's inotify instance
// counts against its own user's limit, as on a device of its own.
func (f *Fleet) Rotate(ctx context.Context, uidBase int) Result {
	r := Result{Event: "every token rotates at once", N: f.opts.N}
	if f.ServerPID() == 0 {
		if r.Err = f.StartServer(); r.Err != nil {
			return r
		}
	}
	if !f.tokenFiles {
		f.StopDaemons()
		since := time.Now()
		if r.Err = f.startDaemons(daemonSpec{tokenFile: true, uid: uidBase}); r.Err != nil {
			return r
		}
		f.Release()
		if r.Err = f.Ready(ctx, since); r.Err != nil {
			return r
		}
	}
	time.Sleep(11 * time.Second)
	if r.Err = f.PrepareTokens(uidBase); r.Err != nil {
		return r
	}
	f.progress("rotating %d tokens", f.opts.N)
	cpu0 := f.serverCPU()
	start := time.Now()
	if r.Err = f.SwapTokens(); r.Err != nil {
		return r
	}
	r.Note = fmt.Sprintf("tokens in place within %.0f ms", float64(time.Since(start))/float64(time.Millisecond))
	p, _ := f.Policy()
	f.measure(ctx, &r, start, start, p.Max+30*time.Second, cpu0)
	// New credentials end the link and the next dial goes out at once,
	// with no jitter: the simulator's boot without a start jitter.
	p.StartJitter = 0
	var runs []fleetsim.Result
	for seed := uint64(1); seed <= 5; seed++ {
		runs = append(runs, fleetsim.Run(p, fleetsim.Scenario{Boot: true}, f.opts.N, seed))
	}
	r.Sim = Figures{PeakPer100ms: runs[0].PeakUpPer100ms, DialsPerDevice: 1, P50: runs[0].P50, P99: runs[0].P99, Last: runs[0].Last, Back: f.opts.N}
	r.SimPeakLo, r.SimPeakHi = r.Sim.PeakPer100ms, r.Sim.PeakPer100ms
	return r
}

// BootCredentials starts the daemons with token files but no tokens, so
// each starts and waits for authorization; once all wait, every token
// arrives in one instant and each daemon makes its first dial. Unlike
// Boot, the daemons' start (about 40 ms of CPU each) is over by then, so
// the first dials are as close together as on devices with a CPU each,
// the case the start jitter is for.
func (f *Fleet) BootCredentials(ctx context.Context, name string, uidBase int) Result {
	r := Result{Event: name, N: f.opts.N}
	f.StopDaemons()
	if f.ServerPID() == 0 {
		if r.Err = f.StartServer(); r.Err != nil {
			return r
		}
	}
	waiting := f.waiting.Load()
	if r.Err = f.startDaemons(daemonSpec{tokenFile: true, uid: uidBase, noToken: true}); r.Err != nil {
		return r
	}
	f.Release()
	deadline := time.Now().Add(time.Duration(f.opts.N)*100*time.Millisecond + 30*time.Second)
	for f.waiting.Load()-waiting < int64(f.opts.N) {
		if time.Now().After(deadline) {
			r.Err = fmt.Errorf("%d of %d daemons up and waiting for a token", f.waiting.Load()-waiting, f.opts.N)
			return r
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.Err = f.PrepareTokens(uidBase); r.Err != nil {
		return r
	}
	time.Sleep(500 * time.Millisecond)
	f.progress("%s: %d tokens at once", name, f.opts.N)
	cpu0 := f.serverCPU()
	start := time.Now()
	if r.Err = f.SwapTokens(); r.Err != nil {
		return r
	}
	r.Note = fmt.Sprintf("tokens in place within %.0f ms", float64(time.Since(start))/float64(time.Millisecond))
	p, _ := f.Policy()
	f.measure(ctx, &r, start, start, p.StartJitter+time.Duration(f.opts.N)*20*time.Millisecond+30*time.Second, cpu0)
	f.simulate(fleetsim.Scenario{Boot: true}, &r)
	return r
}

// RestFigures are the fleet's costs at rest, per daemon (median and
// largest) and at the server.
type RestFigures struct {
	N                               int
	Window                          time.Duration
	RssAnonKB, RssAnonMaxKB         int
	Threads, ThreadsMax             int
	WakeupsPerSec, WakeupsPerSecMax float64
	CPUPerMin                       time.Duration
	ServerCPUPerMin                 time.Duration
	ServerRssKB, ServerThreads      int
	ServerWakeupsPerSec             float64
	DaemonLogLinesPerMin            float64
}

// Rest measures the connected, idle fleet over window.
func (f *Fleet) Rest(window time.Duration) (RestFigures, error) {
	pids := f.DaemonPIDs()
	rf := RestFigures{N: len(pids), Window: window}
	if len(pids) == 0 || f.ServerPID() == 0 {
		return rf, fmt.Errorf("no fleet at rest")
	}
	a := make([]procstat.Sample, len(pids))
	for i, pid := range pids {
		a[i], _ = procstat.Read(pid)
	}
	sa, err := procstat.Read(f.ServerPID())
	if err != nil {
		return rf, err
	}
	lines0 := f.LogLines()
	time.Sleep(window)
	sb, err := procstat.Read(f.ServerPID())
	if err != nil {
		return rf, err
	}
	si := procstat.Between(sa, sb)
	rf.ServerCPUPerMin, rf.ServerWakeupsPerSec = si.CPUPerMinute, si.WakeupsPerSec
	rf.ServerRssKB, rf.ServerThreads = statusField(f.ServerPID(), "VmRSS"), statusField(f.ServerPID(), "Threads")
	rf.DaemonLogLinesPerMin = float64(f.LogLines()-lines0) / window.Minutes()
	var anon, thr []int
	var wake []float64
	var cpu []time.Duration
	for i, pid := range pids {
		b, err := procstat.Read(pid)
		if err != nil {
			continue
		}
		d := procstat.Between(a[i], b)
		wake = append(wake, d.WakeupsPerSec)
		cpu = append(cpu, d.CPUPerMinute)
		anon = append(anon, statusField(pid, "RssAnon"))
		thr = append(thr, statusField(pid, "Threads"))
	}
	if len(anon) == 0 {
		return rf, fmt.Errorf("no daemon could be read")
	}
	slices.Sort(anon)
	slices.Sort(thr)
	slices.Sort(wake)
	slices.Sort(cpu)
	m := len(anon) / 2
	rf.RssAnonKB, rf.RssAnonMaxKB = anon[m], anon[len(anon)-1]
	rf.Threads, rf.ThreadsMax = thr[m], thr[len(thr)-1]
	rf.WakeupsPerSec, rf.WakeupsPerSecMax = wake[m], wake[len(wake)-1]
	rf.CPUPerMin = cpu[m]
	return rf, nil
}

// statusField reads a number field of /proc/PID/status (kB for sizes).
func statusField(pid int, key string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}
