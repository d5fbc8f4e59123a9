package daemon

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"

	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

// fakeSystemd serves the three things restartRequested asks systemd on a
// private bus: the unit of a pid, the unit's job, and the job's type.
type fakeSystemd struct{ pid uint32 }

func (f fakeSystemd) GetUnitByPID(pid uint32) (dbus.ObjectPath, *dbus.Error) {
	if pid != f.pid {
		return "", dbus.MakeFailedError(os.ErrNotExist)
	}
	return "/org/freedesktop/systemd1/unit/tether_2eservice", nil
}

func startFakeSystemd(t *testing.T, jobID uint32, jobType string) {
	t.Helper()
	addr := dbustest.Start(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil {
		t.Fatal(err)
	}
	if err := conn.Export(fakeSystemd{pid: uint32(os.Getpid())}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	job := struct {
		ID   uint32
		Path dbus.ObjectPath
	}{jobID, "/org/freedesktop/systemd1/job/7"}
	if _, err := prop.Export(conn, "/org/freedesktop/systemd1/unit/tether_2eservice", prop.Map{
		"org.freedesktop.systemd1.Unit": {"Job": {Value: job}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := prop.Export(conn, "/org/freedesktop/systemd1/job/7", prop.Map{
		"org.freedesktop.systemd1.Job": {"JobType": {Value: jobType}},
	}); err != nil {
		t.Fatal(err)
	}
}

// Only a restart job keeps the sessions: systemctl stop, a kill without a
// job, or no systemd to ask all end them.
func TestRestartRequested(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name    string
		jobID   uint32
		jobType string
		want    bool
	}{
		{"systemctl restart", 7, "restart", true},
		{"systemctl try-restart", 7, "try-restart", true},
		{"systemctl stop", 7, "stop", false},
		{"kill without a job", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			startFakeSystemd(t, tt.jobID, tt.jobType)
			if got := restartRequested(log); got != tt.want {
				t.Fatalf("restartRequested = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("no bus", func(t *testing.T) {
		t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+t.TempDir()+"/none")
		if restartRequested(log) {
			t.Fatal("a restart assumed without systemd to say so")
		}
	})
}

// Whether a shell's cgroup dies with the service's: its own, a cgroup
// leaf beneath the service (killed with it by systemd), or a unit of its
// own elsewhere (kept).
func TestShellWithinService(t *testing.T) {
	for _, tt := range []struct {
		cg, own string
		want    bool
	}{
		{"/system.slice/tether.service", "/system.slice/tether.service", true},
		{"/system.slice/tether.service/tether/session-ab", "/system.slice/tether.service/daemon", true},
		{"/system.slice/tether.service/tether/session-ab", "/system.slice/tether.service", true},
		{"/tether.slice/tether-session-ab.service", "/system.slice/tether.service", false},
		{"/tether.slice/tether-session-ab.service", "/system.slice/tether.service/daemon", false},
		{"/system.slice/tether.service-x", "/system.slice/tether.service", false},
		{"/tether/session-ab", "/", false},
		{"/", "/", true},
	} {
		if got := within(tt.cg, tt.own); got != tt.want {
			t.Errorf("within(%q, %q) = %v, want %v", tt.cg, tt.own, got, tt.want)
		}
	}
}
