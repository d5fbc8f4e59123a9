package fleetbench

import (
	"fmt"
	"io"
	"time"
)

// Header prints the table's head (markdown).
func Header(w io.Writer) {
	fmt.Fprintln(w, "| event | N | peak in 100 ms: real | sim (5 seeds) | dials/device: real / sim | back p50 / p99 / last: real | sim | server CPU |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
}

// Row prints one event.
func Row(w io.Writer, r Result) {
	pct := func(n int) string { return fmt.Sprintf("%d (%.0f %%)", n, 100*float64(n)/float64(r.N)) }
	back := fmt.Sprintf("%s / %s / %s", sec(r.Real.P50), sec(r.Real.P99), sec(r.Real.Last))
	if r.Real.Back < r.N {
		back += fmt.Sprintf(" (%d of %d back)", r.Real.Back, r.N)
	}
	simPeak := pct(r.Sim.PeakPer100ms)
	if r.SimPeakLo != r.SimPeakHi {
		simPeak += fmt.Sprintf(" [%d–%d]", r.SimPeakLo, r.SimPeakHi)
	}
	cpu := fmt.Sprintf("%.0f ms", float64(r.ServerCPU)/float64(time.Millisecond))
	if r.RetryAfters > 0 {
		cpu += fmt.Sprintf("; %d × 503", r.RetryAfters)
	}
	event := r.Event
	if r.Note != "" {
		event += " (" + r.Note + ")"
	}
	fmt.Fprintf(w, "| %s | %d | %s | %s | %.2f / %.2f | %s | %s / %s / %s | %s |\n", event, r.N, pct(r.Real.PeakPer100ms), simPeak,
		r.Real.DialsPerDevice, r.Sim.DialsPerDevice, back, sec(r.Sim.P50), sec(r.Sim.P99), sec(r.Sim.Last), cpu)
	if r.Err != nil {
		fmt.Fprintf(w, "|  | error: %v |\n", r.Err)
	}
}

// RestTable prints the fleet at rest.
func RestTable(w io.Writer, rf RestFigures) {
	fmt.Fprintf(w, "| at rest, %d daemons connected and idle, over %s | median | largest |\n|---|---|---|\n", rf.N, rf.Window.Round(time.Second))
	fmt.Fprintf(w, "| daemon RssAnon | %.1f MiB | %.1f MiB |\n", float64(rf.RssAnonKB)/1024, float64(rf.RssAnonMaxKB)/1024)
	fmt.Fprintf(w, "| daemon threads | %d | %d |\n", rf.Threads, rf.ThreadsMax)
	fmt.Fprintf(w, "| daemon wakeups | %.2f/s | %.2f/s |\n", rf.WakeupsPerSec, rf.WakeupsPerSecMax)
	fmt.Fprintf(w, "| daemon CPU | %.2f ms/min | |\n", float64(rf.CPUPerMin)/float64(time.Millisecond))
	fmt.Fprintf(w, "| daemon log lines (warn and above), whole fleet | %.1f/min | |\n", rf.DaemonLogLinesPerMin)
	fmt.Fprintf(w, "| server CPU for the fleet's keep-alives | %.0f ms/min (%.2f ms per device per min) | |\n",
		float64(rf.ServerCPUPerMin)/float64(time.Millisecond), float64(rf.ServerCPUPerMin)/float64(time.Millisecond)/float64(rf.N))
	fmt.Fprintf(w, "| server RSS / threads / wakeups | %.1f MiB / %d / %.1f/s | |\n", float64(rf.ServerRssKB)/1024, rf.ServerThreads, rf.ServerWakeupsPerSec)
}

func sec(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
