//go:build !nometrics

package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// SessionUsage is one contained session's resource use, read from its
// cgroup when the metrics are scraped.
type SessionUsage struct {
	// Session is the short session id (8 characters): the one label that
	// names a session, bounded by the session limit (Sessions.MaxTotal).
	Session     string
	MemoryBytes uint64
	CPUSeconds  float64
}

// usageCollector reports the sessions' usage at scrape time.
type usageCollector struct {
	mem, cpu *prometheus.Desc
	mu       sync.Mutex
	read     func() []SessionUsage
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.mem
	ch <- c.cpu
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	read := c.read
	c.mu.Unlock()
	if read == nil {
		return
	}
	seen := make(map[string]bool)
	for _, u := range read() {
		// Two live sessions whose ids share 8 characters would be
		// duplicate series, which fails the whole scrape.
		if seen[u.Session] {
			continue
		}
		seen[u.Session] = true
		ch <- prometheus.MustNewConstMetric(c.mem, prometheus.GaugeValue, float64(u.MemoryBytes), u.Session)
		ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, u.CPUSeconds, u.Session)
	}
}

func newUsage(reg *prometheus.Registry) *usageCollector {
	c := &usageCollector{
		mem: prometheus.NewDesc(namespace+"_session_memory_bytes",
			"Memory in use by a contained terminal session (its cgroup's memory.current), by short session id.", []string{"session"}, nil),
		cpu: prometheus.NewDesc(namespace+"_session_cpu_seconds_total",
			"CPU time used by a contained terminal session (its cgroup's cpu.stat usage_usec), by short session id.", []string{"session"}, nil),
	}
	reg.MustRegister(c)
	return c
}

// ObserveSessions sets where the per-session usage comes from; read runs
// at every scrape and must be quick.
func (m *Metrics) ObserveSessions(read func() []SessionUsage) {
	if m == nil {
		return
	}
	m.usage.mu.Lock()
	m.usage.read = read
	m.usage.mu.Unlock()
}
