package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/fdbudget"
	"github.com/tether-agent/tether/internal/identity"
	"github.com/tether-agent/tether/internal/metrics"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/proto/filetransfer"
	"github.com/tether-agent/tether/internal/proto/menderclient"
	"github.com/tether-agent/tether/internal/proto/portforward"
	"github.com/tether-agent/tether/internal/proto/terminal"
	"github.com/tether-agent/tether/internal/shell"
	"github.com/tether-agent/tether/internal/utmp"
)

// terminalProtocol builds the terminal (proto 1), or nil when it is
// disabled; changed is told when a shell opens or closes.
func terminalProtocol(cfg *config.Config, log *slog.Logger, acct *shell.Account, rec *metrics.Metrics,
	reaper *shell.Reaper, keep *keeper, records *utmp.Recorder, changed func()) proto.Admitted {
	if cfg.Terminal.Disable {
		return nil
	}
	return terminal.New(terminal.Options{
		Log:              log,
		ShellCommand:     cfg.ShellCommand,
		ShellArgs:        cfg.ShellArguments,
		Account:          acct,
		Lang:             cfg.Lang,
		DefaultCols:      cfg.Terminal.Width,
		DefaultRows:      cfg.Terminal.Height,
		StopGrace:        cfg.Sessions.StopGrace.Duration(),
		PingInterval:     cfg.Sessions.PingInterval.Duration(),
		PongTimeout:      cfg.Sessions.PongTimeout.Duration(),
		ReplayBuffer:     int(cfg.Sessions.ReplayBuffer),
		IdleCountsOutput: cfg.Sessions.IdleCountsOutput,
		Reaper:           reaper,
		LoginRecords:     records,
		Recorder:         rec,
		Keeper:           keeperOrNil(keep),
		Changed:          changed,
	})
}

// protocols builds the enabled protocols besides the terminal, each from
// its section of the configuration and what the daemon lends it: shells
// is the shells' account, fds the descriptor budget their remote users'
// work shares. The router closes them (proto.Protocol.Close) when it
// shuts down.
func protocols(cfg *config.Config, log *slog.Logger, shells *shell.Account, rec *metrics.Metrics, reaper *shell.Reaper,
	fds *fdbudget.Budget) ([]proto.Protocol, error) {
	var r registry
	if c := cfg.FileTransfer; !c.Disable {
		r.add(fileTransfer(c, cfg.Limits, shells, log, fds))
	}
	if c := cfg.PortForward; !c.Disable {
		// Forwarded sockets are the shells' account's, so that owner
		// matching firewall rules treat them as that user's.
		r.add(portforward.FromConfig(c, portforward.Deps{Log: log, Identity: ident(shells), FDs: fds, Recorder: rec}))
	}
	if c := cfg.MenderClient; !c.Disable {
		// Under systemd each command runs in a transient unit, outside
		// the daemon's sandbox; otherwise as the daemon's child.
		exec := reaper.Exec
		if menderclient.Booted() {
			exec = menderclient.UnitExec(c.Timeout.Duration())
			log.Info("mender client commands run in transient systemd units")
		} else {
			log.Info("mender client commands run as the daemon's children (no systemd)")
		}
		r.add(menderclient.FromConfig(c, menderclient.Deps{Log: log, Exec: exec}), nil)
	}
	if r.err != nil {
		for _, p := range r.ps {
			p.Close()
		}
		return nil, r.err
	}
	return r.ps, nil
}

// registry collects the protocols built, or the first error.
type registry struct {
	ps  []proto.Protocol
	err error
}

func (r *registry) add(p proto.Protocol, err error) {
	switch {
	case r.err != nil:
	case err != nil:
		r.err = err
	default:
		r.ps = append(r.ps, p)
	}
}

// fileTransfer builds file transfer as FileTransfer.User, or as the
// shells' account when that is empty.
func fileTransfer(c filetransfer.Config, l filetransfer.Limits, shells *shell.Account, log *slog.Logger,
	fds *fdbudget.Budget) (*filetransfer.Protocol, error) {
	a := shells
	if c.User != "" {
		var err error
		if a, err = shell.LookupAccount(c.User); err != nil {
			return nil, fmt.Errorf("file transfer user: %w", err)
		}
	}
	return filetransfer.FromConfig(c, l, filetransfer.Deps{Log: log, Identity: ident(a), StateDir: runtimeDir(), FDs: fds})
}

// ident is the identity the protocols run remote users' work as.
func ident(a *shell.Account) *identity.Identity {
	return &identity.Identity{Name: a.Name, UID: a.UID, GID: a.GID, Groups: a.Groups}
}

// RuntimeDir is the daemon's runtime directory, for the commands that
// talk to a running daemon (tether upgrade).
func RuntimeDir() string { return runtimeDir() }

// runtimeDir is the daemon's runtime directory: systemd's
// RuntimeDirectory= ($RUNTIME_DIRECTORY, the first if several), else
// /run/tether, the unit's.
func runtimeDir() string {
	if d, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); d != "" {
		return d
	}
	return "/run/tether"
}

// keeperOrNil keeps a nil *keeper from becoming a non-nil terminal.Keeper.
func keeperOrNil(k *keeper) terminal.Keeper {
	if k == nil {
		return nil
	}
	return k
}
