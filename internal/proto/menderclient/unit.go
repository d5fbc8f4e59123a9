package menderclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/systemd1"
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
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(cctx))
	if err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	defer conn.Close()
	// JobRemoved says when the unit's start job ends, and how; the match
	// is in place before the job exists, so that its end cannot be missed.
	if err := conn.AddMatchSignalContext(ctx, systemd1.MatchJobRemoved()...); err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	signals := make(chan *dbus.Signal, 16)
	conn.Signal(signals)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("tether-mender-%s-%s.service", c.Args[len(c.Args)-1], hex.EncodeToString(rnd[:]))
	props := []systemd1.Property{
		systemd1.Prop("Description", "tether: "+filepath.Base(c.Path)+" "+c.Args[len(c.Args)-1]),
		systemd1.Prop("Type", "oneshot"),
		// ignore_failure false, so that a failing command fails the unit.
		systemd1.ExecStart(append([]string{c.Path}, c.Args[1:]...)),
		systemd1.Prop("RemainAfterExit", false),
		systemd1.Prop("Environment", c.Env),
		systemd1.Prop("WorkingDirectory", c.Dir),
		systemd1.Prop("TimeoutStartUSec", uint64((timeout+unitStopMargin)/time.Microsecond)),
		// A failed unit stays loaded (CollectMode=inactive) until its exit
		// status is read below and it is reset; a successful one goes at
		// once.
		systemd1.Prop("CollectMode", "inactive"),
	}
	job, err := systemd1.StartTransientUnit(ctx, conn, name, "fail", props)
	if err != nil {
		return fmt.Errorf("start unit %s: %w", name, err)
	}
	done := make(chan string, 1)
	go func() {
		for sig := range signals {
			if j, r, ok := systemd1.JobRemoved(sig); ok && j == job {
				done <- r
				return
			}
		}
	}()
	var result string
	select {
	case result = <-done:
	case <-ctx.Done():
		// Everything in the unit's cgroup, whatever it started.
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = systemd1.KillUnit(kctx, conn, name, "all", syscall.SIGKILL)
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
func unitFailure(conn *dbus.Conn, name, result string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer systemd1.ResetFailedUnit(ctx, conn, name)
	props, err := systemd1.GetAll(ctx, conn, systemd1.UnitPath(name), systemd1.ServiceIface)
	if err != nil {
		return fmt.Errorf("unit %s: %s", name, result)
	}
	code, _ := props["ExecMainCode"].Value().(int32)
	status, _ := props["ExecMainStatus"].Value().(int32)
	if ok, err := systemd1.ExitStatus(code, status); ok {
		if err == nil { // failed all the same, as os/exec would word it
			err = errors.New("exit status 0")
		}
		return err
	}
	return fmt.Errorf("unit %s: %s", name, result)
}
