package menderclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
)

// systemd's manager on the system bus. The calls are made with godbus
// directly: go-systemd's dbus wrapper cost about 25 KiB of the binary
// for the five methods and one signal used here.
const (
	sdService = "org.freedesktop.systemd1"
	sdPath    = dbus.ObjectPath("/org/freedesktop/systemd1")
	sdManager = "org.freedesktop.systemd1.Manager"
)

// sdProperty is a unit property, D-Bus (sv).
type sdProperty struct {
	Name  string
	Value dbus.Variant
}

// sdAux is an auxiliary unit of StartTransientUnit, (sa(sv)); none are
// sent.
type sdAux struct {
	Name       string
	Properties []sdProperty
}

// sdExec is one ExecStart entry, (sasb): the path, the whole argv,
// and systemd's ignore_failure.
type sdExec struct {
	Path          string
	Args          []string
	IgnoreFailure bool
}

// unitPath is a unit's object path: its name with every byte but ASCII
// letters and (not first) digits escaped as _xx (sd_bus_path_encode).
func unitPath(name string) dbus.ObjectPath {
	const hex = "0123456789abcdef"
	if name == "" {
		return sdPath + "/unit/_"
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
	return sdPath + "/unit/" + dbus.ObjectPath(b)
}

// unitStopMargin is how long past the run's own timeout systemd lets a
// unit run before it stops it itself: the daemon kills it at the
// timeout, unless the daemon is gone.
const unitStopMargin = 30 * time.Second

// Booted says whether systemd is the init system (sd_booted(3)).
func Booted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// UnitExec is an Options.Exec that runs each command in a transient
// systemd service of its own, started over the system bus: outside the
// daemon's cgroup and sandbox, with the whole system's view and rights
// that installing an update needs, its output in the journal under its
// own name. It waits for the unit, kills all of it when ctx ends first,
// and returns the command's outcome as os/exec would word it. timeout is
// the protocol's (Options.Timeout): systemd stops the unit itself a
// little after it, should the daemon be gone by then.
func UnitExec(timeout time.Duration) func(ctx context.Context, c *exec.Cmd, kill func(pid int)) error {
	return func(ctx context.Context, c *exec.Cmd, _ func(int)) error {
		return runUnit(ctx, c, timeout)
	}
}

func runUnit(ctx context.Context, c *exec.Cmd, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// The connection lives on its own context: one bound to ctx would
	// close at the timeout, just when the unit is to be killed.
	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(cctx))
	if err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	defer conn.Close()
	// JobRemoved says when the unit's start job ends, and how; the match
	// is in place before the job exists, so that its end cannot be missed.
	if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchObjectPath(sdPath),
		dbus.WithMatchInterface(sdManager), dbus.WithMatchMember("JobRemoved")); err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	signals := make(chan *dbus.Signal, 16)
	conn.Signal(signals)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("tether-mender-%s-%s.service", c.Args[len(c.Args)-1], hex.EncodeToString(rnd[:]))
	props := []sdProperty{
		{Name: "Description", Value: dbus.MakeVariant("tether: " + filepath.Base(c.Path) + " " + c.Args[len(c.Args)-1])},
		{Name: "Type", Value: dbus.MakeVariant("oneshot")},
		// ignore_failure false, so that a failing command fails the unit.
		{Name: "ExecStart", Value: dbus.MakeVariant([]sdExec{{Path: c.Path, Args: append([]string{c.Path}, c.Args[1:]...)}})},
		{Name: "RemainAfterExit", Value: dbus.MakeVariant(false)},
		{Name: "Environment", Value: dbus.MakeVariant(c.Env)},
		{Name: "WorkingDirectory", Value: dbus.MakeVariant(c.Dir)},
		{Name: "TimeoutStartUSec", Value: dbus.MakeVariant(uint64((timeout + unitStopMargin) / time.Microsecond))},
		// A failed unit stays loaded (CollectMode=inactive) until its exit
		// status is read below and it is reset; a successful one goes at
		// once.
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive")},
	}
	manager := conn.Object(sdService, sdPath)
	var job dbus.ObjectPath
	if err := manager.CallWithContext(ctx, sdManager+".StartTransientUnit", 0, name, "fail", props, []sdAux{}).Store(&job); err != nil {
		return fmt.Errorf("start unit %s: %w", name, err)
	}
	done := make(chan string, 1)
	go func() {
		for sig := range signals {
			// JobRemoved(u id, o job, s unit, s result)
			if len(sig.Body) == 4 && sig.Name == sdManager+".JobRemoved" {
				if p, _ := sig.Body[1].(dbus.ObjectPath); p == job {
					r, _ := sig.Body[3].(string)
					done <- r
					return
				}
			}
		}
	}()
	var result string
	select {
	case result = <-done:
	case <-ctx.Done():
		// Everything in the unit's cgroup, whatever it started.
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		manager.CallWithContext(kctx, sdManager+".KillUnit", 0, name, "all", int32(syscall.SIGKILL))
		select {
		case result = <-done:
		case <-kctx.Done():
		}
		cancel()
	}
	if result == "done" {
		return nil
	}
	return unitFailure(manager, conn.Object(sdService, unitPath(name)), name, result)
}

// unitFailure words a failed unit's end as os/exec would ("exit status
// 2", "signal: killed"), from its main process's status, and resets the
// unit so that it goes.
func unitFailure(manager, conn dbus.BusObject, name, result string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer manager.CallWithContext(ctx, sdManager+".ResetFailedUnit", 0, name)
	var props map[string]dbus.Variant
	if err := conn.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, sdService+".Service").Store(&props); err != nil {
		return fmt.Errorf("unit %s: %s", name, result)
	}
	code, _ := props["ExecMainCode"].Value().(int32)
	status, _ := props["ExecMainStatus"].Value().(int32)
	switch code {
	case 1: // CLD_EXITED
		return fmt.Errorf("exit status %d", status)
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		return fmt.Errorf("signal: %s", syscall.Signal(status))
	}
	return fmt.Errorf("unit %s: %s", name, result)
}
