// Package procstat reads how often a process wakes up and how much CPU it
// uses, over all its threads, from /proc: the figures behind "quiet when
// idle".
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sample is a process's counters at one moment, summed over its threads.
type Sample struct {
	At       time.Time
	Switches uint64        // voluntary + involuntary context switches
	CPU      time.Duration // time on a CPU (schedstat, nanosecond resolution)
}

// Read samples the process pid.
func Read(pid int) (Sample, error) {
	s := Sample{At: time.Now()}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		return s, fmt.Errorf("procstat: no threads of process %d: %v", pid, err)
	}
	for _, dir := range tasks {
		sw, err := switches(filepath.Join(dir, "status"))
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread ended between listing and reading
			}
			return s, err
		}
		cpu, err := onCPU(filepath.Join(dir, "schedstat"))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return s, err
		}
		s.Switches += sw
		s.CPU += cpu
	}
	return s, nil
}

func switches(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var n uint64
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
			continue
		}
		x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("procstat: %s: %s: %w", path, k, err)
		}
		n += x
		found++
	}
	if found != 2 {
		return 0, fmt.Errorf("procstat: %s has no context switch counts", path)
	}
	return n, nil
}

func onCPU(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("procstat: %s is empty", path)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("procstat: %s: %w", path, err)
	}
	return time.Duration(ns), nil
}

// Idle is what a process did between two samples.
type Idle struct {
	Window        time.Duration
	WakeupsPerSec float64
	CPUPerMinute  time.Duration
}

// Between computes the rates from a to b.
func Between(a, b Sample) Idle {
	w := b.At.Sub(a.At)
	if w <= 0 {
		return Idle{}
	}
	return Idle{
		Window:        w,
		WakeupsPerSec: float64(b.Switches-a.Switches) / w.Seconds(),
		CPUPerMinute:  time.Duration(float64(b.CPU-a.CPU) * float64(time.Minute) / float64(w)),
	}
}

// Watch samples pid, waits d, samples again and returns the rates.
func Watch(pid int, d time.Duration) (Idle, error) {
	a, err := Read(pid)
	if err != nil {
		return Idle{}, err
	}
	time.Sleep(d)
	b, err := Read(pid)
	if err != nil {
		return Idle{}, err
	}
	return Between(a, b), nil
}

func (i Idle) String() string {
	return fmt.Sprintf("%.2f wakeups/s, %.1f ms CPU/min over %s", i.WakeupsPerSec,
		float64(i.CPUPerMinute)/float64(time.Millisecond), i.Window.Round(time.Second))
}
