package daemon

import (
	"log/slog"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/fdbudget"
)

// Descriptors the daemon keeps out of the budget remote users' work
// (transfers, forwarded connections) draws from.
const (
	// fdBase covers what the daemon holds whatever the server asks:
	// stdio, the link's socket (two while it reconnects), the bus, the
	// journal, the metrics listener and its scrapes, the runtime's poller
	// and signal pipes, the config and /proc reads, with room to spare.
	fdBase = 64
	// fdPerShell is one shell: its pty master and its pidfd, plus the
	// slave, the dup and exec's pipe while it starts (one start at a time
	// needs the spare, fdBase covers that).
	fdPerShell = 2
	// fdShellStart is what one shell start holds on top of fdPerShell.
	fdShellStart = 4
)

// descriptorBudget is the one budget file transfer and port forwarding
// share: RLIMIT_NOFILE less a reserve for the link, the bus, journald,
// metrics and Sessions.MaxTotal shells, so a flood of transfers can never
// make a new shell fail with "too many open files".
func descriptorBudget(cfg *config.Config, log *slog.Logger) *fdbudget.Budget {
	limit, err := fdbudget.ProcessLimit()
	if err != nil {
		log.Warn("cannot read RLIMIT_NOFILE; file transfers and forwards are not bounded by descriptors", "error", err)
		return nil
	}
	reserve := fdBase + fdShellStart + fdPerShell*int(cfg.Sessions.MaxTotal)
	b := fdbudget.New(limit - reserve)
	if b.Limit() < 16 {
		log.Warn("few file descriptors left for file transfers and port forwards; raise LimitNOFILE",
			"rlimit_nofile", limit, "reserved", reserve, "budget", b.Limit())
	} else {
		log.Debug("descriptor budget", "rlimit_nofile", limit, "reserved", reserve, "budget", b.Limit())
	}
	return b
}
