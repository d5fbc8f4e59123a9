package systemd1

import (
	"errors"
	"syscall"
	"testing"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// TestUnitPath: a unit's object path escapes its name as systemd does
// (go-systemd's PathBusEscape is the reference, for bytes from 0x10 on:
// below, it writes one hex digit where systemd writes two, and unit
// names hold no control characters anyway).
func TestUnitPath(t *testing.T) {
	for _, name := range []string{
		"", "a", "0a", "a0", "tether-mender-check-update-0123456789ab.service",
		"x_y.z@1", "\xff\x7fé\x10", "ABCxyz019",
	} {
		want := dbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sd.PathBusEscape(name))
		if got := UnitPath(name); got != want {
			t.Errorf("UnitPath(%q) = %q, want %q", name, got, want)
		}
	}
	if got, want := UnitPath("a\x01"), dbus.ObjectPath("/org/freedesktop/systemd1/unit/a_01"); got != want {
		t.Errorf("UnitPath(%q) = %q, want %q", "a\x01", got, want)
	}
}

// ExecStart has go-systemd's shape and signature: systemd rejects any
// other.
func TestExecStart(t *testing.T) {
	got := ExecStart([]string{"/bin/sh", "-c", "x"})
	want := sd.PropExecStart([]string{"/bin/sh", "-c", "x"}, false)
	if got.Name != want.Name || got.Value.Signature() != want.Value.Signature() || got.Value.String() != want.Value.String() {
		t.Errorf("ExecStart = %s %s, want %s %s", got.Value.Signature(), got.Value, want.Value.Signature(), want.Value)
	}
}

func TestExitStatus(t *testing.T) {
	for _, tt := range []struct {
		code, status int32
		want         error
		ok           bool
	}{
		{1, 0, nil, true},
		{1, 2, errors.New("exit status 2"), true},
		{2, int32(syscall.SIGKILL), errors.New("signal: killed"), true},
		{3, int32(syscall.SIGSEGV), errors.New("signal: segmentation fault"), true},
		{0, 0, nil, false},
	} {
		ok, err := ExitStatus(tt.code, tt.status)
		if ok != tt.ok || (err == nil) != (tt.want == nil) || err != nil && err.Error() != tt.want.Error() {
			t.Errorf("ExitStatus(%d, %d) = %v, %v; want %v, %v", tt.code, tt.status, err, ok, tt.want, tt.ok)
		}
	}
}
