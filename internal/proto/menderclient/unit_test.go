package menderclient

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

// fakeSystemd is org.freedesktop.systemd1 on a private bus, as far as
// UnitExec uses it: StartTransientUnit runs the service's ExecStart and
// says JobRemoved when it ends, with systemd's result; a failed unit's
// ExecMain properties can be read until ResetFailedUnit; KillUnit
// signals it.
type fakeSystemd struct {
	conn *dbus.Conn

	mu     sync.Mutex
	props  map[string]map[string]dbus.Variant
	procs  map[string]*os.Process
	killed map[string]int32
	reset  map[string]bool
	jobs   uint32
}

type unitProp struct {
	Name  string
	Value dbus.Variant
}

type auxUnit struct {
	Name  string
	Props []unitProp
}

type execCmd struct {
	Path   string
	Argv   []string
	Ignore bool // systemd's ignore_failure
}

// unitState is a unit's object: its Service properties.
type unitState struct{ code, status int32 }

func (u unitState) GetAll(string) (map[string]dbus.Variant, *dbus.Error) {
	return map[string]dbus.Variant{"ExecMainCode": dbus.MakeVariant(u.code), "ExecMainStatus": dbus.MakeVariant(u.status)}, nil
}

func (f *fakeSystemd) StartTransientUnit(name, mode string, props []unitProp, _ []auxUnit) (dbus.ObjectPath, *dbus.Error) {
	m := map[string]dbus.Variant{}
	for _, p := range props {
		m[p.Name] = p.Value
	}
	var cmds []execCmd
	if err := dbus.Store([]interface{}{m["ExecStart"].Value()}, &cmds); err != nil || len(cmds) != 1 {
		return "", dbus.MakeFailedError(errors.New("bad ExecStart"))
	}
	c := exec.Command(cmds[0].Path, cmds[0].Argv[1:]...)
	c.Env, _ = m["Environment"].Value().([]string)
	c.Dir, _ = m["WorkingDirectory"].Value().(string)
	if err := c.Start(); err != nil {
		return "", dbus.MakeFailedError(err)
	}
	f.mu.Lock()
	f.jobs++
	id := f.jobs
	f.props[name] = m
	f.procs[name] = c.Process
	f.mu.Unlock()
	job := dbus.ObjectPath("/org/freedesktop/systemd1/job/" + string(rune('0'+id)))
	go func() {
		err := c.Wait()
		var st unitState
		result := "done"
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			ws := ee.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				st = unitState{2, int32(ws.Signal())}
			} else {
				st = unitState{1, int32(ws.ExitStatus())}
			}
			if !cmds[0].Ignore {
				result = "failed"
			}
		}
		path := dbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sd.PathBusEscape(name))
		_ = f.conn.Export(st, path, "org.freedesktop.DBus.Properties")
		_ = f.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, job, name, result)
	}()
	return job, nil
}

func (f *fakeSystemd) KillUnit(name, who string, sig int32) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed[name] = sig
	if p := f.procs[name]; p != nil {
		_ = p.Signal(syscall.Signal(sig))
	}
	return nil
}

func (f *fakeSystemd) ResetFailedUnit(name string) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reset[name] = true
	return nil
}

// startFakeSystemd serves a fake systemd on a private bus that is the
// test's system bus.
func startFakeSystemd(t *testing.T) *fakeSystemd {
	addr := dbustest.Start(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeSystemd{conn: conn, props: map[string]map[string]dbus.Variant{}, procs: map[string]*os.Process{},
		killed: map[string]int32{}, reset: map[string]bool{}}
	if err := conn.Export(f, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", r, err)
	}
	return f
}

func unitScript(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "mender-update")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnitExec(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		timeout time.Duration // of the run's context
		want    string        // error text; "" = success
		killed  bool
	}{
		{"success", `[ "$1" = check-update ] && [ "$PWD" = / ] && [ "$FOO" = bar ]`, time.Minute, "", false},
		{"exit status", "exit 3", time.Minute, "exit status 3", false},
		{"killed at the timeout", "exec sleep 30", 300 * time.Millisecond, "signal: killed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeSystemd(t)
			bin := unitScript(t, tc.body)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			c := exec.Command(bin, TypeCheckUpdate)
			c.Env, c.Dir = []string{"PATH=" + ChildPath, "FOO=bar"}, "/"
			err := UnitExec(0)(ctx, c, func(int) { t.Error("the daemon's kill was used") })
			if (err == nil) != (tc.want == "") || (err != nil && err.Error() != tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.props) != 1 {
				t.Fatalf("%d units started", len(f.props))
			}
			for name, p := range f.props {
				if !strings.HasPrefix(name, "tether-mender-check-update-") || !strings.HasSuffix(name, ".service") {
					t.Errorf("unit name %q", name)
				}
				if p["Type"].Value() != "oneshot" || p["TimeoutStartUSec"].Value() != uint64((DefaultTimeout+unitStopMargin)/time.Microsecond) {
					t.Errorf("unit properties %v", p)
				}
				if _, ok := f.killed[name]; ok != tc.killed {
					t.Errorf("killed %v, want %v", ok, tc.killed)
				}
				if f.reset[name] != (tc.want != "") {
					t.Errorf("reset %v: a failed unit must be reset, only it", f.reset[name])
				}
			}
		})
	}
}
