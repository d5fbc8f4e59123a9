package shell

import (
	"errors"
	"strings"
	"testing"
)

// The containment is the best the device offers, in the order unit,
// cgroup, process group; a mode asked for by name that the device cannot
// give falls back and says why; process-group asks nothing.
func TestChooseContainment(t *testing.T) {
	units := func() (*systemdUnits, error) { return &systemdUnits{version: 252}, nil }
	noUnits := func() (*systemdUnits, error) {
		return nil, errors.New("PID 1 is not systemd")
	}
	cgroup := func() (*cgroupBase, error) { return &cgroupBase{dir: "/sys/fs/cgroup/tether", kill: true}, nil }
	noCgroup := func() (*cgroupBase, error) { return nil, errors.New("no cgroup v2 hierarchy is mounted") }
	tests := []struct {
		name       string
		mode       string
		p          probes
		want       string
		wantForced string   // "" = not forced
		reasonHas  []string // words the logged reason must hold
	}{
		{"auto with systemd", ModeAuto, probes{units, cgroup}, ModeUnit, "", []string{"tether.slice", "systemd 252"}},
		{"auto without systemd", ModeAuto, probes{noUnits, cgroup}, ModeCgroup, "", []string{"PID 1 is not systemd", "/sys/fs/cgroup/tether", "cgroup.kill"}},
		{"auto with neither", ModeAuto, probes{noUnits, noCgroup}, ModeProcessGroup, "", []string{"PID 1 is not systemd", "is mounted", "setsid"}},
		{"empty is auto", "", probes{units, cgroup}, ModeUnit, "", nil},
		{"unit forced and there", ModeUnit, probes{units, cgroup}, ModeUnit, "", nil},
		{"unit forced, not there", ModeUnit, probes{noUnits, cgroup}, ModeCgroup, "PID 1 is not systemd", nil},
		{"cgroup forced skips systemd", ModeCgroup, probes{units, cgroup}, ModeCgroup, "", nil},
		{"cgroup forced, not there", ModeCgroup, probes{units, noCgroup}, ModeProcessGroup, "is mounted", nil},
		{"process group asks nothing", ModeProcessGroup, probes{units, cgroup}, ModeProcessGroup, "", []string{"Sessions.Containment is process-group"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asked := map[string]bool{}
			p := probes{
				systemd: func() (*systemdUnits, error) { asked["systemd"] = true; return tt.p.systemd() },
				cgroup:  func() (*cgroupBase, error) { asked["cgroup"] = true; return tt.p.cgroup() },
			}
			c, forced := choose(tt.mode, p)
			if c.Mode() != tt.want {
				t.Fatalf("mode %q: got %s (%s), want %s", tt.mode, c.Mode(), c.Reason(), tt.want)
			}
			if (forced == "") != (tt.wantForced == "") || !strings.Contains(forced, tt.wantForced) {
				t.Fatalf("forced = %q, want %q", forced, tt.wantForced)
			}
			for _, w := range tt.reasonHas {
				if !strings.Contains(c.Reason(), w) {
					t.Errorf("reason %q lacks %q", c.Reason(), w)
				}
			}
			if tt.mode == ModeProcessGroup && len(asked) > 0 {
				t.Errorf("process-group probed %v", asked)
			}
			if tt.mode == ModeCgroup && asked["systemd"] {
				t.Error("cgroup mode probed systemd")
			}
		})
	}
}

func TestLimitsValidate(t *testing.T) {
	ok := DefaultLimits()
	tests := []struct {
		name string
		mod  func(*Limits)
		bad  string // "" = valid; else the field the error names
	}{
		{"defaults", func(*Limits) {}, ""},
		{"bytes", func(l *Limits) { l.MemoryMax = "256M" }, ""},
		{"plain bytes", func(l *Limits) { l.MemoryMax = "1048576" }, ""},
		{"infinity", func(l *Limits) { l.MemoryMax = "infinity" }, ""},
		{"empty memory", func(l *Limits) { l.MemoryMax = "" }, ""},
		{"no tasks limit", func(l *Limits) { l.TasksMax = 0 }, ""},
		{"all modes", func(l *Limits) { l.Containment = ModeProcessGroup }, ""},
		{"pam", func(l *Limits) { l.PAMService = "login" }, ""},
		{"bad mode", func(l *Limits) { l.Containment = "docker" }, "Containment"},
		{"zero memory", func(l *Limits) { l.MemoryMax = "0" }, "MemoryMax"},
		{"percent too big", func(l *Limits) { l.MemoryMax = "150%" }, "MemoryMax"},
		{"bad unit", func(l *Limits) { l.MemoryMax = "12Q" }, "MemoryMax"},
		{"weight too big", func(l *Limits) { l.CPUWeight = 10001 }, "CPUWeight"},
		{"pam path", func(l *Limits) { l.PAMService = "../etc/x" }, "PAMService"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := ok
			tt.mod(&l)
			err := l.Validate()
			if tt.bad == "" && err != nil {
				t.Fatalf("valid limits refused: %v", err)
			}
			if tt.bad != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.bad+":")) {
				t.Fatalf("got %v, want an error about %s", err, tt.bad)
			}
		})
	}
}

func TestMemoryBytes(t *testing.T) {
	const ram = 1 << 30
	tests := []struct {
		in   string
		want uint64
	}{
		{"25%", ram / 4},
		{"256M", 256 << 20},
		{"2G", 2 << 30},
		{"64k", 64 << 10},
		{"infinity", ^uint64(0)},
		{"", ^uint64(0)},
	}
	for _, tt := range tests {
		if got := (Limits{MemoryMax: tt.in}).memoryBytes(ram); got != tt.want {
			t.Errorf("memoryBytes(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
