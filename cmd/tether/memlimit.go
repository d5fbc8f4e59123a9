package main

import (
	"bufio"
	"bytes"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Bounds of the derived Go memory limit.
const (
	maxDerivedMemoryLimit = 32 << 20
	minDerivedMemoryLimit = 16 << 20
)

// setMemoryLimit gives the Go runtime a soft heap limit, so that garbage
// from a burst of large frames is collected before the device feels it
// rather than when the heap has doubled. GOMEMLIMIT, when set, wins (the
// runtime applies it itself). Otherwise the limit is 32 MiB, or an eighth
// of the memory available (the cgroup's memory.max or the RAM) when that is
// smaller, but not under 16 MiB. It is a soft limit: the heap may exceed it
// when that much is live, the GC then only works harder.
func setMemoryLimit() (limit int64, source string) {
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok && v != "" {
		return debug.SetMemoryLimit(-1), "GOMEMLIMIT"
	}
	limit, source = maxDerivedMemoryLimit, "default"
	if avail, from := availableMemory(); avail > 0 && avail/8 < limit {
		limit, source = max(avail/8, minDerivedMemoryLimit), "an eighth of "+from
	}
	debug.SetMemoryLimit(limit)
	return limit, source
}

// availableMemory is the own cgroup's memory.max, or else the RAM size.
func availableMemory() (int64, string) {
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				if v, err := os.ReadFile("/sys/fs/cgroup" + p + "/memory.max"); err == nil {
					if n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil && n > 0 {
						return n, "the cgroup's memory.max"
					}
				}
			}
		}
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil && kb > 0 {
				return kb << 10, "the RAM"
			}
		}
	}
	return 0, ""
}
