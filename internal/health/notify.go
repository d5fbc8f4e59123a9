package health

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier speaks the sd_notify protocol through go-systemd's daemon
// package. Without NOTIFY_SOCKET in the environment every method is a silent
// no-op, so the same daemon runs under systemd, in a terminal or in a test.
//
// The environment is read on every call and left in place; child processes
// must not inherit it, which is why shells get an environment built from
// scratch rather than a copy of the daemon's.
type Notifier struct {
	log *slog.Logger
	// failing is set after a send error so a broken socket yields one
	// warning, not one per ping; it is cleared by the next success.
	failing atomic.Bool
	// status is the latest text given to Status, restored when the loops
	// recover from a stall that replaced it.
	status atomic.Pointer[string]
}

// NewNotifier returns a Notifier that reports send failures to log.
func NewNotifier(log *slog.Logger) *Notifier {
	return &Notifier{log: log}
}

// Ready tells systemd that start-up (or a reload) is complete.
func (n *Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Status sets the free-form status line `systemctl status` shows. Line
// breaks would end the STATUS= assignment early, so they become spaces.
func (n *Notifier) Status(text string) {
	n.status.Store(&text)
	n.sendStatus(text)
}

func (n *Notifier) sendStatus(text string) {
	n.send("STATUS=" + strings.Join(strings.Fields(text), " "))
}

// Stopping tells systemd that shutdown has begun.
func (n *Notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

func (n *Notifier) send(state string) {
	sent, err := daemon.SdNotify(false, state)
	switch {
	case err != nil:
		if !n.failing.Swap(true) {
			n.log.Warn("systemd notification failed; further failures are not logged until one succeeds",
				"state", firstLine(state), "err", err)
		}
	case sent:
		if n.failing.Swap(false) {
			n.log.Info("systemd notifications work again")
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// RunWatchdog feeds systemd's watchdog until ctx is done. When the service
// has a watchdog (WATCHDOG_USEC set, and WATCHDOG_PID, if set, naming this
// process) it sends WATCHDOG=1 at half the interval, but only while
// m.Check() says every loop is alive. When a loop stalls it stops feeding,
// logs one error naming the stale loops and puts them in the status line,
// so that systemd kills and restarts the daemon; if the loops recover
// before that, feeding resumes, the recovery is logged and the last Status
// text is restored. Without a
// watchdog it returns at once.
func (n *Notifier) RunWatchdog(ctx context.Context, m *Monitor) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Error("systemd watchdog settings are invalid; not feeding the watchdog", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	period := interval / 2
	n.log.Debug("feeding the systemd watchdog", "interval", interval, "period", period)

	tick := time.NewTicker(period)
	defer tick.Stop()
	healthy := true
	for {
		ok, stale := m.Check()
		switch {
		case ok:
			if !healthy {
				n.log.Info("all loops are making progress again; feeding the systemd watchdog")
				healthy = true
				if last := n.status.Load(); last != nil {
					n.sendStatus(*last)
				}
			}
			n.send(daemon.SdNotifyWatchdog)
		case healthy:
			healthy = false
			names := strings.Join(stale, ", ")
			n.log.Error("loops stopped making progress; no longer feeding the systemd watchdog, expect a restart",
				"stale", names, "watchdog", interval)
			n.sendStatus("unhealthy: stalled loops: " + names)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
