//go:build !nometrics

package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
)

const namespace = "tether"

// durationBuckets spans interactive sessions: seconds to a day.
func durationBuckets() []float64 {
	return []float64{1, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400}
}

// Metrics holds tether's collectors in a registry of its own. All methods
// are safe for concurrent use, cheap, and no-ops on a nil *Metrics, so a
// daemon with metrics off can simply pass nil around.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	sessionsActive   *prometheus.GaugeVec
	sessionsOpened   *prometheus.CounterVec
	sessionsClosed   *prometheus.CounterVec
	sessionDuration  *prometheus.HistogramVec
	limitRejections  *prometheus.CounterVec
	detached         *prometheus.CounterVec
	reattached       *prometheus.CounterVec
	detachedNow      prometheus.Gauge
	restored         prometheus.Counter
	terminalBytesIn  *coarseCounter
	terminalBytesOut *coarseCounter
	framesIn         *coarseCounter
	framesOut        *coarseCounter
	malformedFrames  *prometheus.CounterVec
	linkUp           prometheus.Gauge
	linkReconnects   prometheus.Counter
	lastConnect      prometheus.Gauge
	tokenChanges     prometheus.Counter
	gatherErrors     prometheus.Counter
	pf               portForward
	identity         identity
	usage            *usageCollector

	limitPerUser, limitTotal, limitIdle, limitAbsolute prometheus.Gauge

	started      time.Time
	lastConnNano atomic.Int64 // of the latest LinkUp; 0 = never
}

// New builds the registry: tether's metrics, tether_build_info from info,
// the configured limits, and the standard process and Go collectors.
func New(info BuildInfo, limits Limits) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), now: time.Now}
	m.started = m.now()
	f := factory{reg: m.reg}

	buildInfo := f.gaugeVec("build_info",
		"Always 1; the labels say which tether build is running.",
		"version", "commit", "goversion")
	buildInfo.WithLabelValues(info.Version, info.Commit, info.GoVersion).Set(1)

	m.sessionsActive = f.gaugeVec("sessions_active", "Sessions open right now, by protocol.", "proto")
	m.sessionsOpened = f.counterVec("sessions_opened_total", "Sessions opened, by protocol.", "proto")
	m.sessionsClosed = f.counterVec("sessions_closed_total",
		"Sessions closed, by protocol and reason (user, stop, idle_expired, absolute_expired, shell_exit, health_timeout, token_cleared, shutdown, evicted, other).",
		"proto", "reason")
	m.sessionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "session_duration_seconds",
		Help:    "How long closed sessions lasted, by protocol.",
		Buckets: durationBuckets(),
	}, []string{"proto"})
	m.reg.MustRegister(m.sessionDuration)
	m.limitRejections = f.counterVec("session_limit_rejections_total",
		"New sessions refused because a limit was reached, by limit (per_user, total).", "limit")
	m.detached = f.counterVec("sessions_detached_total",
		"Shells whose peer was deemed gone and that wait for their user to reattach, by reason (link_down, no_answer, health, byte_limit, user_gone).", "reason")
	m.reattached = f.counterVec("sessions_reattached_total",
		"Detached shells given a peer again, by reason (resumed: its own peer answered; new_terminal: its user opened a terminal again).", "reason")
	m.detachedNow = f.gauge("sessions_detached", "Shells detached right now (counted in sessions_active too).")
	m.restored = f.counter("sessions_restored_total",
		"Shells taken back from the previous run of the daemon (a restart or an upgrade that kept them), detached for their users.")

	terminalBytes := f.counterVec("terminal_bytes_total",
		"Terminal data bytes in whole KiB (so that single keystrokes do not show): in = from the user to the shell, out = from the shell to the user.", "direction")
	m.terminalBytesIn = newCoarse(terminalBytes.WithLabelValues("in"), terminalBytesStep)
	m.terminalBytesOut = newCoarse(terminalBytes.WithLabelValues("out"), terminalBytesStep)
	frames := f.counterVec("link_frames_total",
		"Protocol frames over the server link, in steps of 64 (so that single keystrokes do not show): in = received, out = sent.", "direction")
	m.framesIn = newCoarse(frames.WithLabelValues("in"), linkFramesStep)
	m.framesOut = newCoarse(frames.WithLabelValues("out"), linkFramesStep)
	m.malformedFrames = f.counterVec("link_malformed_frames_total",
		"Received frames that could not be decoded, by kind of defect.", "kind")

	m.linkUp = f.gauge("link_up", "1 while the server link is connected, else 0.")
	m.linkReconnects = f.counter("link_reconnects_total",
		"Connection attempts made after the link was lost or a dial failed.")
	m.lastConnect = f.gauge("link_last_connect_timestamp_seconds",
		"Unix time of the latest successful connect; 0 if none yet.")
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "link_since_last_connect_seconds",
		Help: "Seconds since the latest successful connect, or since start if there has been none.",
	}, m.sinceLastConnect))
	m.tokenChanges = f.counter("auth_token_changes_total",
		"Times the device credentials changed (rotated, cleared or set).")

	m.limitPerUser = f.gauge("config_sessions_per_user_max", "Configured maximum of sessions per user; 0 = no limit.")
	m.limitTotal = f.gauge("config_sessions_max", "Configured maximum of sessions on the device; 0 = no limit.")
	m.limitIdle = f.gauge("config_session_idle_timeout_seconds", "Configured idle timeout of a session; 0 = none.")
	m.limitAbsolute = f.gauge("config_session_absolute_timeout_seconds", "Configured absolute lifetime of a session; 0 = none.")
	m.SetLimits(limits)
	m.gatherErrors = f.counter("metrics_gather_errors_total",
		"Scrapes during which a collector failed; the scrape still serves what it could gather.")

	m.pf = newPortForward(f)
	m.identity = newIdentity(f)
	m.usage = newUsage(m.reg)

	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
	)

	// Series that exist before anything happens, so rates and alerts work
	// from the first scrape instead of appearing with the first event.
	m.sessionsActive.WithLabelValues(ProtoShell)
	m.sessionsOpened.WithLabelValues(ProtoShell)
	m.sessionDuration.WithLabelValues(ProtoShell)
	for _, r := range Reasons() {
		m.sessionsClosed.WithLabelValues(ProtoShell, r)
	}
	m.limitRejections.WithLabelValues(LimitPerUser)
	m.limitRejections.WithLabelValues(LimitTotal)
	for _, r := range DetachReasons() {
		m.detached.WithLabelValues(r)
	}
	m.reattached.WithLabelValues(ReattachResumed)
	m.reattached.WithLabelValues(ReattachNewTerminal)
	return m
}

// factory registers collectors under the tether namespace.
type factory struct{ reg *prometheus.Registry }

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

// SetLimits updates the configured-limit gauges, e.g. after a reload.
func (m *Metrics) SetLimits(l Limits) {
	if m == nil {
		return
	}
	m.limitPerUser.Set(float64(l.MaxPerUser))
	m.limitTotal.Set(float64(l.MaxTotal))
	m.limitIdle.Set(l.IdleTimeout.Seconds())
	m.limitAbsolute.Set(l.AbsoluteTimeout.Seconds())
}

// SessionOpened counts a new session of protocol proto (e.g. ProtoShell).
func (m *Metrics) SessionOpened(proto string) {
	if m == nil {
		return
	}
	proto = token(proto)
	m.sessionsOpened.WithLabelValues(proto).Inc()
	m.sessionsActive.WithLabelValues(proto).Inc()
}

// SessionClosed counts the end of a session that SessionOpened counted,
// why it ended (one of the Reason constants) and how long it lasted.
func (m *Metrics) SessionClosed(proto, reason string, d time.Duration) {
	if m == nil {
		return
	}
	proto = token(proto)
	m.sessionsActive.WithLabelValues(proto).Dec()
	m.sessionsClosed.WithLabelValues(proto, knownReason(reason)).Inc()
	m.sessionDuration.WithLabelValues(proto).Observe(d.Seconds())
}

// LimitRejected counts a session refused by LimitPerUser or LimitTotal.
func (m *Metrics) LimitRejected(limit string) {
	if m == nil {
		return
	}
	m.limitRejections.WithLabelValues(knownLimit(limit)).Inc()
}

// SessionDetached counts a shell detached for why (a Detach constant).
func (m *Metrics) SessionDetached(why string) {
	if m == nil {
		return
	}
	m.detached.WithLabelValues(knownOf(why, DetachReasons())).Inc()
}

// SessionReattached counts a detached shell given a peer again, how
// (a Reattach constant).
func (m *Metrics) SessionReattached(how string) {
	if m == nil {
		return
	}
	m.reattached.WithLabelValues(knownOf(how, []string{ReattachResumed, ReattachNewTerminal})).Inc()
}

// SessionsRestored counts n shells taken back from the previous run.
func (m *Metrics) SessionsRestored(n int) {
	if m == nil {
		return
	}
	m.restored.Add(float64(n))
}

// DetachedSessions sets how many shells are detached now.
func (m *Metrics) DetachedSessions(n int) {
	if m == nil {
		return
	}
	m.detachedNow.Set(float64(n))
}

// TerminalBytesIn counts terminal input bytes (user → shell).
func (m *Metrics) TerminalBytesIn(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.terminalBytesIn.add(uint64(n))
}

// TerminalBytesOut counts terminal output bytes (shell → user).
func (m *Metrics) TerminalBytesOut(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.terminalBytesOut.add(uint64(n))
}

// FrameIn counts a frame received from the server.
func (m *Metrics) FrameIn() {
	if m == nil {
		return
	}
	m.framesIn.add(1)
}

// FrameOut counts a frame sent to the server.
func (m *Metrics) FrameOut() {
	if m == nil {
		return
	}
	m.framesOut.add(1)
}

// MalformedFrame counts an undecodable frame; kind is a short lower-case
// classification such as wire.MalformedKind values.
func (m *Metrics) MalformedFrame(kind string) {
	if m == nil {
		return
	}
	m.malformedFrames.WithLabelValues(token(kind)).Inc()
}

// LinkUp records a successful connect.
func (m *Metrics) LinkUp() {
	if m == nil {
		return
	}
	now := m.now()
	m.lastConnNano.Store(now.UnixNano())
	m.lastConnect.Set(float64(now.UnixNano()) / 1e9)
	m.linkUp.Set(1)
}

// LinkDown records the loss of the link (or a failed first connect).
func (m *Metrics) LinkDown() {
	if m == nil {
		return
	}
	m.linkUp.Set(0)
}

// LinkReconnect counts a connection attempt after a lost link or a failed
// dial.
func (m *Metrics) LinkReconnect() {
	if m == nil {
		return
	}
	m.linkReconnects.Inc()
}

// TokenChanged counts a change of the device credentials.
func (m *Metrics) TokenChanged() {
	if m == nil {
		return
	}
	m.tokenChanges.Inc()
}

func (m *Metrics) sinceLastConnect() float64 {
	since := m.started
	if n := m.lastConnNano.Load(); n != 0 {
		since = time.Unix(0, n)
	}
	return m.now().Sub(since).Seconds()
}

// Handler serves /metrics from the registry (text exposition format, or
// protobuf when asked for) and /healthz from health
// (typically (*health.Monitor).Check; nil means always healthy). It works on
// a nil *Metrics too, serving only /healthz.
func (m *Metrics) Handler(health func() (bool, []string)) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", healthHandler(health))
	if m != nil {
		mux.Handle("/metrics", m.metricsHandler())
	}
	return mux
}

// Serve listens on listen and serves h until ctx is done, then shuts down
// cleanly. listen is host:port as net.Listen reads it (so ":9110" means
// every interface, which the configuration only allows with
// Metrics.AllowNonLoopback); a bare port means 127.0.0.1. An empty listen
// means metrics are off: it returns nil at once.
func Serve(ctx context.Context, log *slog.Logger, listen string, h http.Handler) error {
	return serveEndpoint(ctx, log, Endpoint{Listen: listen}, h)
}

// ServeEndpoint serves rec's metrics and the /healthz of health (see
// Handler) on an Endpoint, which may be a unix socket, until ctx is done.
// An empty Listen means metrics are off: it returns nil at once.
func ServeEndpoint(ctx context.Context, log *slog.Logger, ep Endpoint, rec *Metrics, health func() (bool, []string)) error {
	return serveEndpoint(ctx, log, ep, rec.Handler(health))
}

func serveEndpoint(ctx context.Context, log *slog.Logger, ep Endpoint, h http.Handler) error {
	if ep.Listen == "" {
		return nil
	}
	ln, err := ep.listen()
	if err != nil {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	return ServeListener(ctx, log, ln, h)
}

// ServeListener is Serve on a listener the caller opened; it closes ln.
func ServeListener(ctx context.Context, log *slog.Logger, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("metrics endpoint listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics endpoint: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("metrics endpoint shutdown: %w", err)
	}
	return nil
}

// metricsHandler is the exposition endpoint. promhttp would do, but it
// pulls in github.com/klauspost/compress, which go.mod does not carry;
// content negotiation and encoding come from expfmt instead, uncompressed,
// which is fine for a loopback scrape.
func (m *Metrics) metricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		mfs, err := m.reg.Gather()
		if err != nil {
			// Serve what was gathered; the counter makes the failure visible.
			m.gatherErrors.Inc()
			if len(mfs) == 0 {
				http.Error(w, "gathering metrics failed: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		format := expfmt.Negotiate(r.Header)
		w.Header().Set("Content-Type", string(format))
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodHead {
			return
		}
		enc := expfmt.NewEncoder(w, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return // the client went away; nothing useful left to do
			}
		}
		if c, ok := enc.(expfmt.Closer); ok {
			_ = c.Close()
		}
	})
}

// healthHandler serves /healthz: 200 "ok" while health reports every loop
// alive, 503 naming the stalled loops otherwise. A nil health is always ok.
func healthHandler(health func() (bool, []string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		ok, stale := true, []string(nil)
		if health != nil {
			ok, stale = health()
		}
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: stalled loops: %s\n", strings.Join(stale, ", "))
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// knownOf maps v to itself when it is one of known, else to "other".
func knownOf(v string, known []string) string {
	for _, k := range known {
		if v == k {
			return k
		}
	}
	return other
}
