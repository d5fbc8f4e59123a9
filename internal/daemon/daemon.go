// Package daemon builds tether's parts from the configuration, runs them
// and shuts them down in order. Read this file to see the whole daemon.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/handover"
	"github.com/tether-agent/tether/internal/health"
	"github.com/tether-agent/tether/internal/link"
	"github.com/tether-agent/tether/internal/metrics"
	"github.com/tether-agent/tether/internal/mux"
	"github.com/tether-agent/tether/internal/proto/terminal"
	"github.com/tether-agent/tether/internal/session"
	"github.com/tether-agent/tether/internal/shell"
	"github.com/tether-agent/tether/internal/utmp"
	"github.com/tether-agent/tether/internal/version"
)

// Options are what the command line hands the daemon.
type Options struct {
	Config  *config.Config
	Log     *slog.Logger
	Version string
	// Subreaper makes the daemon adopt orphaned descendants of its shells
	// so that none is left as a zombie of whatever PID 1 is.
	Subreaper bool
	// ShutdownTimeout bounds the whole shutdown (default: shutdownBudget
	// of Sessions.StopGrace).
	ShutdownTimeout time.Duration
	// LoginRecords replaces the system's utmp and wtmp (tests only; nil =
	// the system's).
	LoginRecords *utmp.Files
}

// Run runs the daemon until ctx ends, then shuts down cleanly.
func Run(ctx context.Context, o Options) error {
	cfg, log := o.Config, o.Log
	grace := cfg.Sessions.StopGrace.Duration()
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = shutdownBudget(grace)
	}
	acct, err := shell.LookupAccount(cfg.User)
	if err != nil {
		return fmt.Errorf("shell user: %w", err)
	}
	// What the previous run handed over (systemd's descriptor store, or
	// the exec of an upgrade), taken before anything else.
	passed, err := handover.ListenFiles()
	if err != nil {
		log.Warn("previous run: descriptors passed to this run not usable", "error", err)
	}
	rt := runtimeDir()
	self, _ := os.Executable()
	var records *handover.Dir
	if err := os.MkdirAll(rt, 0o755); err != nil {
		log.Warn("no runtime directory: sessions will not survive a restart or upgrade", "error", err)
	} else if records, err = handover.OpenDir(handover.SessionsDir(rt)); err != nil {
		log.Warn("sessions will not survive a restart or upgrade", "error", err)
	}
	store := handover.NewFDStore()
	var keep *keeper
	if records != nil && cfg.Sessions.DetachedTimeout.Duration() > 0 {
		keep = newKeeper(records, store, log)
	}
	defer handover.RemovePID(rt)
	if o.Subreaper {
		if err := setSubreaper(); err != nil {
			log.Warn("cannot become a child subreaper; orphaned shell processes go to PID 1", "error", err)
		}
	}

	src, err := authSource(cfg, log)
	if err != nil {
		return err
	}

	monitor := health.New(nil)
	// How long each loop may leave a probe unanswered: the reader is
	// parked while it waits in a read, so its figure covers handling one
	// frame (and answering a ping, bounded by WriteTimeout); the writer
	// may be in a write that progresses slowly; the janitor only sweeps.
	readerLoop := monitor.Register("link-reader", cfg.Link.WriteTimeout.Duration()+10*time.Second)
	writerLoop := monitor.Register("link-writer", 30*time.Second)
	janitorLoop := monitor.Register("janitor", 10*time.Second)
	notifier := health.NewNotifier(log)
	status := &statusLine{n: notifier, maxTotal: int(cfg.Sessions.MaxTotal), link: "starting"}

	rec := metrics.New(metrics.BuildInfo{Version: version.Version, Commit: version.Commit, GoVersion: version.GoVersion()},
		metrics.Limits{MaxPerUser: int(cfg.Sessions.MaxPerUser), MaxTotal: int(cfg.Sessions.MaxTotal),
			IdleTimeout: cfg.IdleTimeout(), AbsoluteTimeout: cfg.AbsoluteTimeout()})

	var release *memoryReleaser // needs the router, which calls it
	out := mux.New(nil)
	reaper := shell.NewReaper()
	if !cfg.Terminal.Disable {
		// Chosen once: a unit per session, a cgroup per session, or the
		// process group; it outlives every shell (deferred, it runs
		// after the shutdown below).
		box := shell.ChooseContainment(ctx, log, cfg.Sessions.Limits, grace)
		defer box.Close()
		reaper.Contain(box)
		rec.ObserveSessions(func() []metrics.SessionUsage { return sessionUsage(reaper) })
	}
	// One descriptor budget for every protocol's remote work.
	fds := descriptorBudget(cfg, log)
	protos, err := protocols(cfg, log, acct, rec, reaper, fds)
	if err != nil {
		return err
	}
	// The router's Shutdown closes them; this is for the ways out before
	// it (Close is idempotent).
	defer func() {
		for _, p := range protos {
			p.Close()
		}
	}()
	term := terminalProtocol(cfg, log, acct, rec, reaper, keep, loginRecords(cfg, o.LoginRecords, log), func() { status.publish(); release.changed() })
	router := session.New(session.Options{
		Log:             log,
		Terminal:        term,
		Protocols:       protos,
		MaxPerUser:      int(cfg.Sessions.MaxPerUser),
		MaxTotal:        int(cfg.Sessions.MaxTotal),
		EvictOldest:     cfg.Sessions.EvictOldest,
		IdleTimeout:     cfg.IdleTimeout(),
		AbsoluteTimeout: cfg.AbsoluteTimeout(),
		StopGrace:       cfg.Sessions.StopGrace.Duration(),
		PingInterval:    cfg.Sessions.PingInterval.Duration(),
		DetachedTimeout: cfg.Sessions.DetachedTimeout.Duration(),
		ProbeGrace:      cfg.Sessions.ProbeGrace.Duration(),
		Recorder:        rec,
		Janitor:         janitorLoop,
	}, out)
	status.counts = router.Counts
	release = newMemoryReleaser(router.Counts)

	lnk, err := link.New(link.Options{
		Log:            log,
		CAFile:         cfg.Link.CAFile,
		SkipVerify:     cfg.Link.InsecureSkipVerify,
		PingInterval:   cfg.Link.PingInterval.Duration(),
		ReadTimeout:    cfg.Link.ReadTimeout.Duration(),
		WriteTimeout:   cfg.Link.WriteTimeout.Duration(),
		MaxMessageSize: cfg.Link.MaxMessageSize,
		LatencyTarget:  cfg.Link.LatencyTarget.Duration(),
		// The key's name is the kernel's.
		CongestionControl: cfg.Link.CongestionControl,
		BackoffBase:       cfg.Reconnect.BackoffBase.Duration(),
		BackoffMax:        cfg.Reconnect.BackoffMax.Duration(),
		FirstJitter:       cfg.Reconnect.FirstJitter.Duration(),
		StartJitter:       cfg.Reconnect.StartJitter.Duration(),
		Refresh:           src.Refresh,
		Reader:            readerLoop,
		Writer:            writerLoop,
		Observer:          rec,
		State:             status.setLink,
		Alert:             status.setAlert,
	}, router, out)
	if err != nil {
		return err
	}
	if cfg.Link.InsecureSkipVerify {
		log.Warn("TLS certificate verification is off (Link.InsecureSkipVerify); use only for testing")
	}

	// The link and auth source outlive ctx a little: shutdown first tells
	// every peer that its session stops, which needs the link.
	linkCtx, stopLink := context.WithCancel(context.Background())
	defer stopLink()
	var wg sync.WaitGroup
	start := func(name string, f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(linkCtx)
			log.Debug("stopped", "part", name)
		}()
	}
	// The reaper outlives the shells: it stops with the link, after the
	// router's shutdown has torn every shell down.
	start("reaper", reaper.Run)
	// Before the link: a user's first terminal must find them.
	tp, _ := term.(*terminal.Protocol)
	if n := restore(log, records, store, passed, tp, router, cfg.Sessions.DetachedTimeout.Duration()); n > 0 || len(passed) > 0 {
		note := fmt.Sprintf("restored %d sessions from the previous run", n)
		if n == 1 {
			note = "restored 1 session from the previous run"
		}
		log.Info(note, "event", "sessions_restored", "sessions", n)
		rec.SessionsRestored(n)
		status.setNote(note)
	}
	start("auth", func(c context.Context) {
		if err := src.Run(c); err != nil {
			log.Error("auth source failed", "error", err)
		}
	})
	start("link", func(c context.Context) { _ = lnk.Run(c, src.Updates()) })
	start("janitor", router.Run)
	start("watchdog", func(c context.Context) { notifier.RunWatchdog(c, monitor) })
	start("memory", release.run)
	if cfg.Metrics.Listen != "" {
		start("metrics", func(c context.Context) {
			ep := metrics.Endpoint{Listen: cfg.Metrics.Listen, SocketMode: cfg.Metrics.SocketFileMode()}
			if err := metrics.ServeEndpoint(c, log, ep, rec, monitor.Check); err != nil {
				log.Error("metrics endpoint failed", "error", err, "listen", cfg.Metrics.Listen)
			}
		})
	}

	// SIGUSR2 (tether upgrade) execs the new binary in place, keeping the
	// sessions.
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	var upgradeTarget atomic.Pointer[string] // set before endRun
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	// Only now: a SIGUSR2 before the handler would kill the daemon.
	if err := handover.WritePID(rt); err != nil {
		log.Debug("no pid file: tether upgrade cannot find the daemon", "error", err)
	}
	start("upgrade", func(c context.Context) {
		for {
			select {
			case <-c.Done():
				return
			case <-runCtx.Done():
				return
			case <-usr2:
				path, err := checkUpgrade(c, records, self, reaper)
				if err != nil {
					log.Error("upgrade refused; running on", "event", "upgrade_refused", "error", err)
					continue
				}
				log.Info("upgrading: handing the sessions over to the new binary", "event", "upgrade", "binary", path)
				upgradeTarget.Store(&path)
				endRun()
				return
			}
		}
	})

	// SIGUSR1 logs a status report, as upstream does.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	start("status-report", func(c context.Context) {
		for {
			select {
			case <-c.Done():
				return
			case <-usr1:
				report(log, lnk, router)
			}
		}
	})

	log.Info("tether started", "version", o.Version, "user", acct.Name, "shell", cfg.ShellCommand,
		"auth", cfg.Auth.Source, "max_per_user", cfg.Sessions.MaxPerUser, "max_total", cfg.Sessions.MaxTotal)
	notifier.Ready()

	<-runCtx.Done()
	deadline, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout-200*time.Millisecond)
	defer cancel()
	upgradeTo := ""
	if p := upgradeTarget.Load(); p != nil {
		upgradeTo = *p
	}
	switch {
	case upgradeTo != "" && ctx.Err() == nil:
		// Same pid after the exec: the shells stay this process's
		// children. No STOPPING=1: to systemd, if it runs the daemon,
		// the service goes on.
		notifier.Status("upgrading to " + upgradeTo)
		hs := router.HandOver(deadline, grace)
		files := keep.writeHandedOver(hs)
		flush(deadline, out)
		stopLink()
		wg.Wait()
		// Gone until the new run has its SIGUSR2 handler: a second
		// tether upgrade meanwhile would kill it.
		handover.RemovePID(rt)
		log.Info("handing sessions over to the new binary", "sessions", len(files), "binary", upgradeTo)
		err := handover.Exec(upgradeTo, os.Args, os.Environ(), files)
		log.Error("upgrade: exec failed; running the old binary again", "error", err)
		err = handover.Exec("/proc/self/exe", os.Args, os.Environ(), files)
		closeHandedOver(hs)
		return fmt.Errorf("upgrade: exec failed, the sessions are lost: %w", err)
	case keep != nil && store.Enabled() && keep.outliveService() && restartRequested(log):
		log.Info("restarting: the sessions wait for the next run")
		notifier.Stopping()
		hs := router.HandOver(deadline, grace)
		keep.writeHandedOver(hs) // their masters are in systemd's store
		closeHandedOver(hs)
		flush(deadline, out)
		stopLink()
		wg.Wait()
		log.Info("tether stopped; sessions handed over", "sessions", len(hs))
		return nil
	}
	log.Info("shutting down")
	notifier.Stopping()
	// Every shell gets the configured grace per step (HUP, TERM, KILL),
	// as on any other stop; the budget was sized for it.
	router.Shutdown(deadline, grace)
	flush(deadline, out)
	stopLink()
	wg.Wait()
	log.Info("tether stopped")
	return nil
}

// shutdownBudget is how long a shutdown may take with the given grace: two
// graces (HUP→TERM→KILL), the wait for killed processes, and a second for
// the stop notices to go out. systemd/tether.service's TimeoutStopSec
// must exceed it for the default grace.
func shutdownBudget(grace time.Duration) time.Duration {
	return 2*grace + shell.KillWait + time.Second
}

// sessionUsage is the contained sessions' resource use, for the metrics.
func sessionUsage(r *shell.Reaper) []metrics.SessionUsage {
	us := r.Usage()
	out := make([]metrics.SessionUsage, 0, len(us))
	for _, u := range us {
		out = append(out, metrics.SessionUsage{Session: u.Session, MemoryBytes: u.MemoryBytes, CPUSeconds: u.CPU.Seconds()})
	}
	return out
}

// report logs the link state and every session: who, since when, idle
// for how long.
func report(log *slog.Logger, lnk *link.Link, router *session.Router) {
	up, since := lnk.Connected()
	sessions := router.Sessions()
	log.Info("status report", "link_up", up, "last_connect", since, "sessions", len(sessions))
	now := time.Now()
	for _, s := range sessions {
		log.Info("status report: session", "session_id", s.SessionID, "user_id", s.UserID,
			"started", s.Started.Format(time.RFC3339), "age", now.Sub(s.Started).Round(time.Second).String(),
			"idle", now.Sub(s.LastInput).Round(time.Second).String(), "detached", s.Detached)
	}
}

// flush waits (briefly) for queued frames, such as the stop notices, to be
// written before the link closes.
func flush(ctx context.Context, m *mux.Mux) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for m.Pending() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func authSource(cfg *config.Config, log *slog.Logger) (auth.Source, error) {
	switch cfg.Auth.Source {
	case config.AuthSourceStatic:
		return auth.NewStatic(log, auth.StaticOptions{ServerURL: cfg.ServerURL, Token: cfg.Auth.Token, TokenFile: cfg.Auth.TokenFile}), nil
	case config.AuthSourceDBus, "":
		return auth.NewDBus(log, auth.DBusOptions{Address: cfg.Auth.DBusAddress}), nil
	}
	return nil, fmt.Errorf("Auth.Source %q: want dbus or static", cfg.Auth.Source)
}

func setSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", e)
	}
	return nil
}

// statusLine keeps systemd's STATUS= in words: link state and sessions.
type statusLine struct {
	n        *health.Notifier
	maxTotal int
	counts   func() (int, int)

	mu    sync.Mutex
	link  string
	alert string
	note  string
}

func (s *statusLine) setNote(text string) {
	s.mu.Lock()
	s.note = text
	s.mu.Unlock()
	s.publish()
}

func (s *statusLine) setLink(up bool, detail string) {
	s.mu.Lock()
	if up {
		s.link = "connected"
	} else {
		s.link = detail
	}
	s.mu.Unlock()
	s.publish()
}

func (s *statusLine) setAlert(text string) {
	s.mu.Lock()
	s.alert = text
	s.mu.Unlock()
	s.publish()
}

func (s *statusLine) publish() {
	s.mu.Lock()
	l, a, note := s.link, s.alert, s.note
	s.mu.Unlock()
	n, u := s.counts()
	s.n.Status(health.Summary{Link: l, Sessions: n, Users: u, MaxTotal: s.maxTotal, Note: note, Alert: a}.String())
}
