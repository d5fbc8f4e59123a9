//go:build nometrics

package metrics

// SessionUsage is one contained session's resource use.
type SessionUsage struct {
	Session     string
	MemoryBytes uint64
	CPUSeconds  float64
}

// ObserveSessions does nothing in the nometrics build.
func (*Metrics) ObserveSessions(func() []SessionUsage) {}
