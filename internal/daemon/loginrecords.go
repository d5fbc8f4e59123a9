package daemon

import (
	"log/slog"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/utmp"
)

// loginRecords is the recorder of the shells' utmp and wtmp entries, or
// nil when they are off or the system keeps no such files; what is
// written is said once, at start. files overrides the system's files
// (tests only; nil = detect).
func loginRecords(cfg *config.Config, files *utmp.Files, log *slog.Logger) *utmp.Recorder {
	if cfg.Terminal.Disable {
		return nil
	}
	if !cfg.Sessions.LoginRecords {
		log.Info("login records are off (Sessions.LoginRecords)")
		return nil
	}
	f, what := utmp.Detect()
	if files != nil {
		f, what = *files, "utmp "+files.Utmp+", wtmp "+files.Wtmp+" (set by the test harness)"
	}
	log.Info("login records: " + what)
	return utmp.New(f)
}
