package shell

import (
	"math"
	"reflect"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// The transient unit of a session: who, where, the pty as its terminal,
// whole-cgroup teardown, and exactly the limits that are set, with the
// D-Bus types systemd wants (a wrong signature fails the start).
func TestUnitProperties(t *testing.T) {
	acct := &Account{Name: "alice", UID: 1000, GID: 100, Groups: []uint32{100, 27}, Home: "/nonexistent-home"}
	spec := Spec{Command: "/bin/bash", Args: []string{"--login"}, Account: acct, Lang: "C.UTF-8",
		SessionID: "3f2c\nb1e0-aaaa", UserID: "u-1"}
	common := map[string]any{
		"Description":         "tether session 3f2c_b1e0-aaaa of user u-1",
		"Slice":               "tether.slice",
		"DefaultDependencies": false,
		"Conflicts":           []string{"shutdown.target"},
		"Before":              []string{"shutdown.target"},
		"Type":                "exec",
		"User":                "alice",
		"Group":               "100",
		"SupplementaryGroups": []string{"100", "27"},
		"WorkingDirectory":    "/",
		"TTYPath":             "/dev/pts/7",
		"StandardInput":       "tty",
		"StandardOutput":      "tty",
		"StandardError":       "tty",
		"IgnoreSIGPIPE":       false,
		"KillMode":            "control-group",
		"SendSIGHUP":          true,
		"TimeoutStopUSec":     uint64(4 * time.Second / time.Microsecond),
		"CollectMode":         "inactive-or-failed",
		"AddRef":              true,
	}
	tests := []struct {
		name   string
		lim    Limits
		memMax uint64
		want   map[string]any // besides common; nil value = must be absent
	}{
		{"defaults", DefaultLimits(), 256 << 20,
			map[string]any{"MemoryMax": uint64(256 << 20), "TasksMax": uint64(256), "CPUWeight": uint64(50), "PAMName": nil}},
		{"no limits", Limits{MemoryMax: "infinity"}, math.MaxUint64,
			map[string]any{"MemoryMax": nil, "TasksMax": nil, "CPUWeight": nil, "PAMName": nil}},
		{"pam", Limits{PAMService: "tether", TasksMax: 64}, math.MaxUint64,
			map[string]any{"PAMName": "tether", "TasksMax": uint64(64), "MemoryMax": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			props := unitProperties(spec, "/dev/pts/7", tt.lim, tt.memMax, 4*time.Second)
			got := map[string]any{}
			for _, p := range props {
				if _, dup := got[p.Name]; dup {
					t.Errorf("property %s set twice", p.Name)
				}
				got[p.Name] = p.Value.Value()
			}
			for k, w := range common {
				if !reflect.DeepEqual(got[k], w) {
					t.Errorf("%s = %#v, want %#v", k, got[k], w)
				}
			}
			for k, w := range tt.want {
				v, ok := got[k]
				if w == nil {
					if ok {
						t.Errorf("%s = %#v, want it unset", k, v)
					}
					continue
				}
				if !reflect.DeepEqual(v, w) {
					t.Errorf("%s = %#v, want %#v", k, v, w)
				}
			}
			env, _ := got["Environment"].([]string)
			if !reflect.DeepEqual(env, environment(spec)) {
				t.Errorf("Environment = %q, want %q", env, environment(spec))
			}
			want := sdbus.PropExecStart([]string{"/bin/bash", "--login"}, false)
			// The same D-Bus value as go-systemd's, field by field.
			var es dbus.Variant
			for _, p := range props {
				if p.Name == "ExecStart" {
					es = p.Value
				}
			}
			if es.Signature() != want.Value.Signature() || es.String() != want.Value.String() {
				t.Errorf("ExecStart = %s %s, want %s %s", es.Signature(), es, want.Value.Signature(), want.Value)
			}
			for _, p := range props {
				if s := p.Value.Signature().String(); p.Name == "ExecStart" && s != "a(sasb)" {
					t.Errorf("ExecStart has signature %s", s)
				}
			}
		})
	}
}

func TestShortID(t *testing.T) {
	for in, want := range map[string]string{
		"3F2C9B1E-0d4a-4c1e-9f00-aaaaaaaaaaaa": "3f2c9b1e",
		"a-b":                                  "ab",
		"":                                     "anon",
		"../../x\n":                            "x",
	} {
		if got := shortID(in); got != want {
			t.Errorf("shortID(%q) = %q, want %q", in, got, want)
		}
	}
}
