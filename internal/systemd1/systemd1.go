// Package systemd1 calls systemd's manager (org.freedesktop.systemd1) on
// the system bus with godbus directly: the few methods, properties and
// signals the session units and the mender-client units use. go-systemd's
// dbus wrapper cost about 25 KiB of the binary for them.
package systemd1

import (
	"context"
	"fmt"
	"syscall"

	"github.com/godbus/dbus/v5"
)

// The manager's bus name, object and interfaces.
const (
	Service   = "org.freedesktop.systemd1"
	Path      = dbus.ObjectPath("/org/freedesktop/systemd1")
	Manager   = "org.freedesktop.systemd1.Manager"
	UnitIface = "org.freedesktop.systemd1.Unit"
	// ServiceIface holds a service unit's own properties (MainPID,
	// ExecMainCode, Result, ...).
	ServiceIface = "org.freedesktop.systemd1.Service"
	propsIface   = "org.freedesktop.DBus.Properties"
)

// Errors systemd answers with, by D-Bus error name.
const (
	ErrUnitExists = "org.freedesktop.systemd1.UnitExists"
	ErrNoSuchUnit = "org.freedesktop.systemd1.NoSuchUnit"
)

// Property is a unit property, D-Bus (sv).
type Property struct {
	Name  string
	Value dbus.Variant
}

// Prop is the property name with the value v.
func Prop(name string, v any) Property { return Property{Name: name, Value: dbus.MakeVariant(v)} }

// Exec is one ExecStart entry, (sasb): the path, the whole argv, and
// systemd's ignore_failure.
type Exec struct {
	Path          string
	Args          []string
	IgnoreFailure bool
}

// ExecStart is the ExecStart property of one command; argv[0] is its
// path. ignore_failure is false, so that a failing command fails the
// unit.
func ExecStart(argv []string) Property {
	return Prop("ExecStart", []Exec{{Path: argv[0], Args: argv}})
}

// aux is an auxiliary unit of StartTransientUnit, (sa(sv)); none are sent.
type aux struct {
	Name       string
	Properties []Property
}

// UnitPath is a unit's object path: its name with every byte but ASCII
// letters and (not first) digits escaped as _xx (sd_bus_path_encode).
func UnitPath(name string) dbus.ObjectPath {
	const hex = "0123456789abcdef"
	if name == "" {
		return Path + "/unit/_"
	}
	b := make([]byte, 0, len(name)*3)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' && i != 0 {
			b = append(b, c)
			continue
		}
		b = append(b, '_', hex[c>>4], hex[c&15])
	}
	return Path + "/unit/" + dbus.ObjectPath(b)
}

func manager(conn *dbus.Conn) dbus.BusObject { return conn.Object(Service, Path) }

// StartTransientUnit starts a transient unit and returns its start job.
func StartTransientUnit(ctx context.Context, conn *dbus.Conn, name, mode string, props []Property) (dbus.ObjectPath, error) {
	var job dbus.ObjectPath
	err := manager(conn).CallWithContext(ctx, Manager+".StartTransientUnit", 0, name, mode, props, []aux{}).Store(&job)
	return job, err
}

// StopUnit queues the unit's stop job.
func StopUnit(ctx context.Context, conn *dbus.Conn, name, mode string) error {
	var job dbus.ObjectPath
	return manager(conn).CallWithContext(ctx, Manager+".StopUnit", 0, name, mode).Store(&job)
}

// KillUnit sends sig to the unit's processes; who is "main", "control"
// or "all".
func KillUnit(ctx context.Context, conn *dbus.Conn, name, who string, sig syscall.Signal) error {
	return manager(conn).CallWithContext(ctx, Manager+".KillUnit", 0, name, who, int32(sig)).Err
}

// ResetFailedUnit resets a failed unit, so that it goes.
func ResetFailedUnit(ctx context.Context, conn *dbus.Conn, name string) error {
	return manager(conn).CallWithContext(ctx, Manager+".ResetFailedUnit", 0, name).Err
}

// Subscribe asks the manager to send its signals (JobRemoved, and the
// units' PropertiesChanged).
func Subscribe(ctx context.Context, conn *dbus.Conn) error {
	return manager(conn).CallWithContext(ctx, Manager+".Subscribe", 0).Err
}

// Unref drops a reference the unit's AddRef took.
func Unref(ctx context.Context, conn *dbus.Conn, unit dbus.ObjectPath) error {
	return conn.Object(Service, unit).CallWithContext(ctx, UnitIface+".Unref", 0).Err
}

// Get reads one property of the object at path (the manager or a unit).
func Get(ctx context.Context, conn *dbus.Conn, path dbus.ObjectPath, iface, name string) (dbus.Variant, error) {
	var v dbus.Variant
	err := conn.Object(Service, path).CallWithContext(ctx, propsIface+".Get", 0, iface, name).Store(&v)
	return v, err
}

// GetAll reads every property of one interface of the object at path.
func GetAll(ctx context.Context, conn *dbus.Conn, path dbus.ObjectPath, iface string) (map[string]dbus.Variant, error) {
	var props map[string]dbus.Variant
	err := conn.Object(Service, path).CallWithContext(ctx, propsIface+".GetAll", 0, iface).Store(&props)
	return props, err
}

// MatchJobRemoved matches the manager's JobRemoved signal.
func MatchJobRemoved() []dbus.MatchOption {
	return []dbus.MatchOption{dbus.WithMatchObjectPath(Path),
		dbus.WithMatchInterface(Manager), dbus.WithMatchMember("JobRemoved")}
}

// MatchPropertiesChanged matches the PropertiesChanged signal of the
// object at path.
func MatchPropertiesChanged(path dbus.ObjectPath) []dbus.MatchOption {
	return []dbus.MatchOption{dbus.WithMatchObjectPath(path),
		dbus.WithMatchInterface(propsIface), dbus.WithMatchMember("PropertiesChanged")}
}

// IsPropertiesChanged says whether sig is a PropertiesChanged signal.
func IsPropertiesChanged(sig *dbus.Signal) bool {
	return sig.Name == propsIface+".PropertiesChanged"
}

// JobRemoved reads a JobRemoved(u id, o job, s unit, s result) signal:
// the job and its result ("done", "failed", "canceled", ...).
func JobRemoved(sig *dbus.Signal) (job dbus.ObjectPath, result string, ok bool) {
	if len(sig.Body) != 4 || sig.Name != Manager+".JobRemoved" {
		return "", "", false
	}
	job, ok = sig.Body[1].(dbus.ObjectPath)
	result, _ = sig.Body[3].(string)
	return job, result, ok
}

// ExitStatus words a main process's end as os/exec would ("exit status
// 2", "signal: killed") from ExecMainCode and ExecMainStatus; ok is
// false for a code that says neither (it never ran). An exit status of
// 0 is a nil error.
func ExitStatus(code, status int32) (ok bool, err error) {
	switch code {
	case 1: // CLD_EXITED
		if status == 0 {
			return true, nil
		}
		return true, fmt.Errorf("exit status %d", status)
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		return true, fmt.Errorf("signal: %s", syscall.Signal(status))
	}
	return false, nil
}
