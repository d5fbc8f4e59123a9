package shell

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

// fakeUnit is a session unit as a stand-in for systemd serves it on a
// private bus: the properties adopt and watch read, and the references
// taken on it.
type fakeUnit struct {
	mu    sync.Mutex
	props map[string]any
	refs  int
}

func (f *fakeUnit) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.props[name]
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{name})
	}
	return dbus.MakeVariant(v), nil
}

func (f *fakeUnit) Ref() *dbus.Error   { f.mu.Lock(); f.refs++; f.mu.Unlock(); return nil }
func (f *fakeUnit) Unref() *dbus.Error { f.mu.Lock(); f.refs--; f.mu.Unlock(); return nil }

func (f *fakeUnit) set(name string, v any) { f.mu.Lock(); f.props[name] = v; f.mu.Unlock() }

func (f *fakeUnit) refCount() int { f.mu.Lock(); defer f.mu.Unlock(); return f.refs }

// fakeManager answers GetUnit for the units it has loaded.
type fakeManager struct{ units map[string]*fakeUnit }

func (m *fakeManager) GetUnit(name string) (dbus.ObjectPath, *dbus.Error) {
	if m.units[name] == nil {
		return "", dbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not loaded."})
	}
	return unitPath(name), nil
}

// fakeSystemd starts a private bus with a stand-in for systemd serving
// units, and returns systemdUnits connected to it and the stand-in's
// connection (to emit the units' changes).
func fakeSystemd(t *testing.T, units map[string]*fakeUnit) (*systemdUnits, *dbus.Conn) {
	t.Helper()
	addr := dbustest.Start(t)
	srv, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if r, err := srv.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", r, err)
	}
	if err := srv.Export(&fakeManager{units: units}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	for name, u := range units {
		for _, iface := range []string{"org.freedesktop.DBus.Properties", "org.freedesktop.systemd1.Unit"} {
			if err := srv.Export(u, unitPath(name), iface); err != nil {
				t.Fatal(err)
			}
		}
	}
	bus, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	u := &systemdUnits{bus: bus, version: 252, stopTimeout: time.Second, mount: "/sys/fs/cgroup",
		watches: make(map[dbus.ObjectPath]chan struct{}), sigs: make(chan *dbus.Signal, 64),
		jobs: make(map[dbus.ObjectPath]chan<- string)}
	bus.Signal(u.sigs)
	go u.dispatch()
	t.Cleanup(func() { bus.Close() })
	return u, srv
}

// A kept shell is taken back into its unit only when the unit is a
// session's by name, loaded, running, and has the shell as its main
// process (systemd's word); then the daemon holds a reference on it again
// and learns its end from its change signals, with how it ended and the
// limit that ended it.
func TestAdoptUnit(t *testing.T) {
	const pid = 4242
	unit := func(state string, main uint32) *fakeUnit {
		return &fakeUnit{props: map[string]any{"ActiveState": state, "MainPID": main,
			"ControlGroup": "/tether.slice/x.service", "Result": "success", "ExecMainCode": int32(1), "ExecMainStatus": int32(0)}}
	}
	good := unit("active", pid)
	units := map[string]*fakeUnit{
		"tether-session-good.service":     good,
		"tether-session-other.service":    unit("active", pid+1),
		"tether-session-inactive.service": unit("inactive", 0),
		"sshd.service":                    unit("active", pid),
	}
	u, srv := fakeSystemd(t, units)
	newProc := func() *Process { return &Process{pid: pid, done: make(chan struct{}), stopped: make(chan struct{})} }
	for _, tt := range []struct{ name, want string }{
		{"sshd.service", "not a session unit's name"},
		{"tether-session-gone.service", "is gone"},
		{"tether-session-inactive.service", "not running"},
		{"tether-session-other.service", "not its shell"},
	} {
		err := u.adopt(newProc(), tt.name)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("adopt %s: %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
	for name, f := range units {
		if f.refCount() != 0 {
			t.Errorf("a reference was taken on %s", name)
		}
	}
	if len(u.watches) != 0 {
		t.Errorf("watches left after refusals: %v", u.watches)
	}

	p := newProc()
	if err := u.adopt(p, "tether-session-good.service"); err != nil {
		t.Fatal(err)
	}
	if p.UnitName() != "tether-session-good.service" || p.cgroupDir != "/sys/fs/cgroup/tether.slice/x.service" || p.short != "good" {
		t.Fatalf("adopted as unit %q in %q (%q)", p.UnitName(), p.cgroupDir, p.short)
	}
	if good.refCount() != 1 {
		t.Fatalf("%d references on the adopted unit, want 1", good.refCount())
	}
	if err := u.adopt(newProc(), "tether-session-good.service"); err == nil {
		t.Fatal("a unit was adopted twice")
	}
	select {
	case <-p.Done():
		t.Fatal("done before the unit ended")
	case <-time.After(100 * time.Millisecond):
	}
	// The memory ceiling ends it: systemd says so in Result.
	good.set("ActiveState", "failed")
	good.set("Result", "oom-kill")
	good.set("ExecMainCode", int32(2))
	good.set("ExecMainStatus", int32(9))
	if err := srv.Emit(unitPath("tether-session-good.service"), "org.freedesktop.DBus.Properties.PropertiesChanged",
		"org.freedesktop.systemd1.Unit", map[string]dbus.Variant{"ActiveState": dbus.MakeVariant("failed")}, []string{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the unit's end was not seen from its change signal")
	}
	if p.LimitHit() != LimitMemory || p.err == nil || !strings.Contains(p.err.Error(), "killed") {
		t.Fatalf("ended with limit %q, err %v", p.LimitHit(), p.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for good.refCount() != 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if good.refCount() != 0 {
		t.Fatal("the reference on the ended unit was not dropped")
	}
}
