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
	reaper *shell.Reaper, records *utmp.Recorder, changed func()) proto.Admitted {
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
		Changed:          changed,
	})
}

// protocols builds the enabled protocols besides the terminal; the
// returned func frees what they hold once the router is shut down. fds is
// the descriptor budget their remote users' work shares.
func protocols(cfg *config.Config, log *slog.Logger, rec *metrics.Metrics, reaper *shell.Reaper,
	fds *fdbudget.Budget) ([]proto.Protocol, func(), error) {
	var ps []proto.Protocol
	closers := []func(){}
	if !cfg.FileTransfer.Disable {
		name := cfg.FileTransfer.User
		if name == "" {
			name = cfg.User
		}
		a, err := shell.LookupAccount(name)
		if err != nil {
			return nil, nil, fmt.Errorf("file transfer user: %w", err)
		}
		if a.UID == 0 {
			log.Warn("file transfer runs as root: a remote user can read and write every file", "user", a.Name)
		}
		ft, err := filetransfer.New(filetransfer.Options{Log: log, Limits: cfg.Limits,
			Identity:     &identity.Identity{Name: a.Name, UID: a.UID, GID: a.GID, Groups: a.Groups},
			StateDir:     runtimeDir(),
			MaxTransfers: int(cfg.FileTransfer.MaxTransfers), FDs: fds})
		if err != nil {
			return nil, nil, err
		}
		ps = append(ps, ft)
	}
	if pf := cfg.PortForward; !pf.Disable {
		allow, err := portforward.ParseAllow(pf.Allow)
		if err != nil {
			return nil, nil, fmt.Errorf("PortForward.Allow: %w", err)
		}
		// Forwarded sockets are the shells' account's, so that owner
		// matching firewall rules treat them as that user's.
		a, err := shell.LookupAccount(cfg.User)
		if err != nil {
			return nil, nil, fmt.Errorf("port forward user: %w", err)
		}
		ps = append(ps, portforward.New(portforward.Options{
			Identity:      &identity.Identity{Name: a.Name, UID: a.UID, GID: a.GID, Groups: a.Groups},
			Log:           log,
			DialTimeout:   pf.DialTimeout.Duration(),
			IdleTimeout:   pf.IdleTimeout.Duration(),
			MaxPerSession: int(pf.MaxConnections),
			MaxTotal:      int(pf.MaxTotal),
			Window:        int(pf.Window),
			ReadSize:      pf.ReadSize,
			Allow:         allow,
			Recorder:      rec,
			FDs:           fds,
		}))
		if allow == nil {
			log.Info("port forwarding allows any destination (PortForward.Allow is not set)")
		}
	}
	if mc := cfg.MenderClient; !mc.Disable {
		// Under systemd each command runs in a transient unit, outside
		// the daemon's sandbox; otherwise as the daemon's child.
		exec := reaper.Exec
		if menderclient.Booted() {
			exec = menderclient.UnitExec(mc.Timeout.Duration())
			log.Info("mender client commands run in transient systemd units")
		} else {
			log.Info("mender client commands run as the daemon's children (no systemd)")
		}
		p := menderclient.New(menderclient.Options{Log: log, Binaries: mc.Binaries, Timeout: mc.Timeout.Duration(),
			Exec: exec})
		ps = append(ps, p)
		closers = append(closers, p.Close)
	}
	return ps, func() {
		for _, c := range closers {
			c()
		}
	}, nil
}

// runtimeDir is the daemon's runtime directory: systemd's
// RuntimeDirectory= ($RUNTIME_DIRECTORY, the first if several), else
// /run/tether, the unit's.
func runtimeDir() string {
	if d, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); d != "" {
		return d
	}
	return "/run/tether"
}
