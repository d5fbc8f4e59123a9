package shell

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// LimitMemory is what LimitHit reports for a session its memory ceiling
// ended.
const LimitMemory = "memory"

// Containment is how session shells are held, chosen once at start: each
// in a transient systemd unit, each in a cgroup v2 leaf, or each in its
// own terminal session and process group only.
type Containment struct {
	mode   string // ModeUnit, ModeCgroup or ModeProcessGroup
	reason string
	units  *systemdUnits
	cg     *cgroupBase
}

// Mode is the containment in use: ModeUnit, ModeCgroup or ModeProcessGroup.
func (c *Containment) Mode() string {
	if c == nil {
		return ModeProcessGroup
	}
	return c.mode
}

// Reason says, in words, what the choice was and why.
func (c *Containment) Reason() string {
	if c == nil {
		return "process groups"
	}
	return c.reason
}

// Close lets go of the bus connection or the sessions' cgroup directory;
// call it once every session has ended.
func (c *Containment) Close() {
	if c == nil {
		return
	}
	if c.units != nil {
		c.units.close()
	}
	if c.cg != nil {
		c.cg.close()
	}
}

// probes find out what the device offers; tests replace them.
type probes struct {
	systemd func() (*systemdUnits, error)
	cgroup  func() (*cgroupBase, error)
}

// ChooseContainment picks the containment for mode (Limits.Containment)
// and logs the choice once. A mode the device cannot give falls back to
// the next best, with an error in the log: a device must stay reachable.
func ChooseContainment(ctx context.Context, log *slog.Logger, lim Limits, grace time.Duration) *Containment {
	p := probes{
		systemd: func() (*systemdUnits, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return connectSystemd(ctx, lim, grace)
		},
		cgroup: func() (*cgroupBase, error) { return probeCgroup("/proc/self/mountinfo", lim) },
	}
	c, forced := choose(lim.Containment, p)
	if forced != "" {
		log.Error("Sessions.Containment cannot be had here; using the next best", "wanted", lim.Containment,
			"why", forced, "containment", c.mode)
	}
	log.Info("session containment", "containment", c.mode, "detail", c.reason)
	return c
}

// choose runs the probes mode calls for, best first. forced is why a
// mode asked for by name could not be had.
func choose(mode string, p probes) (c *Containment, forced string) {
	var why []string
	if mode == ModeAuto || mode == ModeUnit || mode == "" {
		u, err := p.systemd()
		if err == nil {
			return &Containment{mode: ModeUnit, units: u, reason: u.describe()}, ""
		}
		why = append(why, "no systemd units: "+err.Error())
		if mode == ModeUnit {
			forced = err.Error()
		}
	}
	if mode != ModeProcessGroup {
		cg, err := p.cgroup()
		if err == nil {
			return &Containment{mode: ModeCgroup, cg: cg, reason: strings.Join(append(why, cg.describe()), "; ")}, forced
		}
		why = append(why, "no cgroup v2 subtree: "+err.Error())
		if mode == ModeCgroup {
			forced = err.Error()
		}
	} else {
		why = append(why, "Sessions.Containment is process-group")
	}
	why = append(why, "each shell has its own terminal session; teardown signals its members (a process that leaves it with setsid is not found)")
	return &Containment{mode: ModeProcessGroup, reason: strings.Join(why, "; ")}, forced
}

// describeLimit words a session's limits for a person.
func (c *Containment) describeLimit(limit string) string {
	if limit != LimitMemory {
		return limit
	}
	var max uint64
	switch {
	case c == nil:
	case c.units != nil:
		max = c.units.memMax
	case c.cg != nil:
		max = c.cg.memMax
	}
	return fmt.Sprintf("its memory limit (%s, Sessions.MemoryMax)", formatBytes(max))
}
