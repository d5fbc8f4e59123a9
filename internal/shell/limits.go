package shell

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// Containment modes (Sessions.Containment).
const (
	ModeAuto         = "auto"          // the best the device offers
	ModeUnit         = "unit"          // a transient systemd unit per session
	ModeCgroup       = "cgroup"        // a cgroup v2 leaf per session
	ModeProcessGroup = "process-group" // the shell's terminal session only
)

// Limits is how each terminal session is contained and what it may use.
// It is embedded in the configuration's Sessions section, so its fields
// are keys there (Sessions.Containment, Sessions.MemoryMax, ...).
type Limits struct {
	// Containment is auto, unit, cgroup or process-group. auto takes a
	// systemd unit when PID 1 is systemd and its bus answers, else a
	// cgroup v2 leaf when a subtree is writable, else the process group.
	Containment string
	// PAMService, when set, is the PAM service the unit's shell opens a
	// session of (pam_systemd, pam_loginuid, pam_limits apply); units only.
	PAMService string
	// MemoryMax is a session's memory ceiling: bytes with an optional
	// K, M, G or T suffix (base 1024), a percentage of the device's RAM,
	// or "infinity". Reaching it kills the session.
	MemoryMax string
	// TasksMax is a session's ceiling on processes and threads (0 = none);
	// forks beyond it fail.
	TasksMax uint32
	// CPUWeight is a session's share of contended CPU against other
	// cgroups (1..10000; the device's services have 100).
	CPUWeight uint32
}

// DefaultLimits: a quarter of RAM per session keeps a runaway command from
// starving the device's own workload even on a 256 MiB board, yet leaves
// an interactive session room for real work (a package install, a log
// search); 256 tasks is far above interactive use and far below a fork
// bomb's reach; weight 50 makes sessions yield the CPU two to one to the
// device's services when both want it, and costs nothing when idle.
func DefaultLimits() Limits {
	return Limits{Containment: ModeAuto, MemoryMax: "25%", TasksMax: 256, CPUWeight: 50}
}

// Validate returns every problem, each naming its field.
func (l Limits) Validate() error {
	var errs []error
	switch l.Containment {
	case ModeAuto, ModeUnit, ModeCgroup, ModeProcessGroup:
	default:
		errs = append(errs, fmt.Errorf("Containment: %q is not one of auto, unit, cgroup, process-group", l.Containment))
	}
	if _, _, err := parseMemory(l.MemoryMax); err != nil {
		errs = append(errs, fmt.Errorf("MemoryMax: %w", err))
	}
	if l.CPUWeight != 0 && (l.CPUWeight < 1 || l.CPUWeight > 10000) {
		errs = append(errs, fmt.Errorf("CPUWeight: %d is out of range (1..10000)", l.CPUWeight))
	}
	if strings.ContainsFunc(l.PAMService, func(r rune) bool { return r <= ' ' || r == '/' || r == 0x7f }) {
		errs = append(errs, fmt.Errorf("PAMService: %q is not a PAM service name", l.PAMService))
	}
	return errors.Join(errs...)
}

// parseMemory reads a MemoryMax value: bytes (0 is refused: a session
// that cannot hold a shell is no session), or a percentage in permille.
// "" and "infinity" are no limit.
func parseMemory(s string) (bytes uint64, permille uint32, err error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "infinity" {
		return math.MaxUint64, 0, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f <= 0 || f > 100 {
			return 0, 0, fmt.Errorf("%q: a percentage must be above 0 and at most 100", s)
		}
		return 0, uint32(math.Round(f * 10)), nil
	}
	mult := uint64(1)
	switch s[len(s)-1] {
	case 'K', 'k':
		mult = 1 << 10
	case 'M', 'm':
		mult = 1 << 20
	case 'G', 'g':
		mult = 1 << 30
	case 'T', 't':
		mult = 1 << 40
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > math.MaxUint64/mult {
		return 0, 0, fmt.Errorf("%q: want bytes with an optional K, M, G or T suffix, a percentage, or infinity", s)
	}
	return n * mult, 0, nil
}

// memoryBytes resolves MemoryMax against the device's RAM; MaxUint64 is
// no limit.
func (l Limits) memoryBytes(ram uint64) uint64 {
	b, pm, err := parseMemory(l.MemoryMax)
	if err != nil {
		return math.MaxUint64
	}
	if pm > 0 {
		if ram == 0 {
			return math.MaxUint64
		}
		return ram/1000*uint64(pm) + ram%1000*uint64(pm)/1000
	}
	return b
}

// totalRAM is MemTotal from /proc/meminfo, in bytes (0 if unknown).
func totalRAM() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			fs := strings.Fields(rest)
			if len(fs) >= 1 {
				kb, err := strconv.ParseUint(fs[0], 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// formatBytes words a byte count for people: "256 MiB".
func formatBytes(b uint64) string {
	if b == math.MaxUint64 {
		return "no limit"
	}
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if b >= 1<<u.shift {
			v := float64(b) / float64(uint64(1)<<u.shift)
			if v == math.Trunc(v) {
				return fmt.Sprintf("%.0f %s", v, u.name)
			}
			return fmt.Sprintf("%.1f %s", v, u.name)
		}
	}
	return fmt.Sprintf("%d B", b)
}
