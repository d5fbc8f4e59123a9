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

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

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
	conn, err := sd.NewSystemConnectionContext(cctx)
	if err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	defer conn.Close()
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("tether-mender-%s-%s.service", c.Args[len(c.Args)-1], hex.EncodeToString(rnd[:]))
	props := []sd.Property{
		sd.PropDescription("tether: " + filepath.Base(c.Path) + " " + c.Args[len(c.Args)-1]),
		sd.PropType("oneshot"),
		// The flag go-systemd calls uncleanIsFailure is systemd's
		// ignore_failure (ExecStart's a(sasb)): false, so that a failing
		// command fails the unit.
		sd.PropExecStart(append([]string{c.Path}, c.Args[1:]...), false),
		sd.PropRemainAfterExit(false),
		{Name: "Environment", Value: dbus.MakeVariant(c.Env)},
		{Name: "WorkingDirectory", Value: dbus.MakeVariant(c.Dir)},
		{Name: "TimeoutStartUSec", Value: dbus.MakeVariant(uint64((timeout + unitStopMargin) / time.Microsecond))},
		// A failed unit stays loaded (CollectMode=inactive) until its exit
		// status is read below and it is reset; a successful one goes at
		// once.
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive")},
	}
	done := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, name, "fail", props, done); err != nil {
		return fmt.Errorf("start unit %s: %w", name, err)
	}
	var result string
	select {
	case result = <-done:
	case <-ctx.Done():
		// Everything in the unit's cgroup, whatever it started.
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn.KillUnitContext(kctx, name, int32(syscall.SIGKILL))
		select {
		case result = <-done:
		case <-kctx.Done():
		}
		cancel()
	}
	if result == "done" {
		return nil
	}
	return unitFailure(conn, name, result)
}

// unitFailure words a failed unit's end as os/exec would ("exit status
// 2", "signal: killed"), from its main process's status, and resets the
// unit so that it goes.
func unitFailure(conn *sd.Conn, name, result string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer func() { _ = conn.ResetFailedUnitContext(ctx, name) }()
	props, err := conn.GetUnitTypePropertiesContext(ctx, name, "Service")
	if err != nil {
		return fmt.Errorf("unit %s: %s", name, result)
	}
	code, _ := props["ExecMainCode"].(int32)
	status, _ := props["ExecMainStatus"].(int32)
	switch code {
	case 1: // CLD_EXITED
		return fmt.Errorf("exit status %d", status)
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		return fmt.Errorf("signal: %s", syscall.Signal(status))
	}
	return fmt.Errorf("unit %s: %s", name, result)
}
