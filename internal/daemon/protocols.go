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
)

// terminalProtocol builds the terminal (proto 1), or nil when it is
// disabled; changed is told when a shell opens or closes.
func terminalProtocol(cfg *config.Config, log *slog.Logger, acct *shell.Account, rec *metrics.Metrics,
	reaper *shell.Reaper, changed func()) proto.Admitted {
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
		Recorder:         rec,
		Changed:          changed,
	})
}

// protocols builds the enabled protocols besides the terminal, each from
// its section of the configuration and what the daemon lends it. fds is
// the descriptor budget their remote users' work shares. The router
// closes them (proto.Protocol.Close) when it shuts down.
func protocols(cfg *config.Config, log *slog.Logger, rec *metrics.Metrics, reaper *shell.Reaper,
	fds *fdbudget.Budget) ([]proto.Protocol, error) {
	var ps []proto.Protocol
	if c := cfg.FileTransfer; !c.Disable {
		id, err := account(c.User, cfg.User, "file transfer")
		if err == nil {
			var p *filetransfer.Protocol
			p, err = filetransfer.FromConfig(c, cfg.Limits, filetransfer.Deps{Log: log, Identity: id, StateDir: runtimeDir(), FDs: fds})
			ps = append(ps, p)
		}
		if err != nil {
			return nil, err
		}
	}
	if c := cfg.PortForward; !c.Disable {
		// Forwarded sockets are the shells' account's, so that owner
		// matching firewall rules treat them as that user's.
		id, err := account("", cfg.User, "port forward")
		if err == nil {
			var p *portforward.Protocol
			p, err = portforward.FromConfig(c, portforward.Deps{Log: log, Identity: id, FDs: fds, Recorder: rec})
			ps = append(ps, p)
		}
		if err != nil {
			return nil, err
		}
	}
	if c := cfg.MenderClient; !c.Disable {
		ps = append(ps, menderclient.FromConfig(c, menderclient.Deps{Log: log, Exec: reaper.Exec}))
	}
	return ps, nil
}

// account is the identity of the account name, or of fallback when name
// is empty; what says whose account it is in an error.
func account(name, fallback, what string) (*identity.Identity, error) {
	if name == "" {
		name = fallback
	}
	a, err := shell.LookupAccount(name)
	if err != nil {
		return nil, fmt.Errorf("%s user: %w", what, err)
	}
	return &identity.Identity{Name: a.Name, UID: a.UID, GID: a.GID, Groups: a.Groups}, nil
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
