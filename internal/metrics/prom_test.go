//go:build !nometrics

package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// endpoint is a live metrics endpoint on 127.0.0.1.
type endpoint struct {
	base   string
	cancel context.CancelFunc
	done   chan error
}

func serveLive(t *testing.T, h http.Handler) *endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &endpoint{base: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- ServeListener(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), ln, h) }()
	t.Cleanup(func() { e.stop(t) })
	return e
}

func (e *endpoint) stop(t *testing.T) {
	t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("ServeListener did not return after cancel")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics, fails on any promlint problem, and returns the
// parsed families.
func scrape(t *testing.T, e *endpoint) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, e.base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return mfs
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("metric %s missing from the scrape", name)
	}
	wantLabels := map[string]string{}
	for i := 0; i+1 < len(want); i += 2 {
		wantLabels[want[i]] = want[i+1]
	}
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range wantLabels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Untyped != nil:
			return m.GetUntyped().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("metric %s has no series with labels %v", name, wantLabels)
	return 0
}

func histogramSum(t *testing.T, mfs map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	return mfs[name].GetMetric()[0].GetHistogram().GetSampleSum()
}

// healthState is a settable health function for /healthz.
type healthState struct {
	mu    sync.Mutex
	stale []string
}

func (h *healthState) set(stale ...string) {
	h.mu.Lock()
	h.stale = stale
	h.mu.Unlock()
}

func (h *healthState) check() (bool, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.stale) == 0, h.stale
}

func TestLiveScrape(t *testing.T) {
	m := New(BuildInfo{Version: "1.2.3", Commit: "abc1234", GoVersion: "go1.26"},
		Limits{MaxPerUser: 2, MaxTotal: 16, IdleTimeout: 10 * time.Minute})
	var hs healthState
	e := serveLive(t, m.Handler(hs.check))

	before := scrape(t, e)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tether_build_info", []string{"version", "1.2.3", "commit", "abc1234", "goversion", "go1.26"}, 1},
		{"tether_config_sessions_per_user_max", nil, 2},
		{"tether_config_sessions_max", nil, 16},
		{"tether_config_session_idle_timeout_seconds", nil, 600},
		{"tether_config_session_absolute_timeout_seconds", nil, 0},
		{"tether_sessions_active", []string{"proto", "shell"}, 0},
		{"tether_sessions_closed_total", []string{"reason", ReasonEvicted}, 0},
		{"tether_session_limit_rejections_total", []string{"limit", LimitTotal}, 0},
		{"tether_link_up", nil, 0},
		{"tether_link_last_connect_timestamp_seconds", nil, 0},
	} {
		if got := value(t, before, tc.name, tc.labels...); got != tc.want {
			t.Errorf("before: %s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, std := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "go_goroutines", "go_info", "go_memstats_alloc_bytes"} {
		if _, ok := before[std]; !ok {
			t.Errorf("standard metric %s missing", std)
		}
	}

	for i := 0; i < 3; i++ {
		m.SessionOpened(ProtoShell)
	}
	m.LimitRejected(LimitPerUser)
	m.LimitRejected(LimitPerUser)
	m.LimitRejected(LimitTotal)
	m.SessionClosed(ProtoShell, ReasonIdleExpired, 90*time.Second)
	m.SessionClosed(ProtoShell, "connection reset by peer 10.0.0.1", time.Second) // not a known reason
	m.TerminalBytesIn(10)                                                         // below a KiB: not shown yet
	m.TerminalBytesOut(1000)
	m.TerminalBytesOut(100) // crosses the first KiB
	m.TerminalBytesOut(-5)  // ignored
	for i := 0; i < 65; i++ {
		m.FrameIn()
	}
	m.FrameOut()
	m.MalformedFrame("truncated")
	m.MalformedFrame("Bad Kind: user 42") // squeezed to other
	m.LinkReconnect()
	m.LinkUp()
	m.TokenChanged()
	connected := float64(time.Now().UnixNano()) / 1e9

	after := scrape(t, e)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tether_sessions_opened_total", []string{"proto", "shell"}, 3},
		{"tether_sessions_active", []string{"proto", "shell"}, 1},
		{"tether_sessions_closed_total", []string{"proto", "shell", "reason", ReasonIdleExpired}, 1},
		{"tether_sessions_closed_total", []string{"reason", ReasonOther}, 1},
		{"tether_sessions_closed_total", []string{"reason", ReasonUser}, 0},
		{"tether_session_limit_rejections_total", []string{"limit", LimitPerUser}, 2},
		{"tether_session_limit_rejections_total", []string{"limit", LimitTotal}, 1},
		{"tether_session_duration_seconds", []string{"proto", "shell"}, 2},
		{"tether_terminal_bytes_total", []string{"direction", "in"}, 0},
		{"tether_terminal_bytes_total", []string{"direction", "out"}, 1024},
		{"tether_link_frames_total", []string{"direction", "in"}, 64},
		{"tether_link_frames_total", []string{"direction", "out"}, 0},
		{"tether_link_malformed_frames_total", []string{"kind", "truncated"}, 1},
		{"tether_link_malformed_frames_total", []string{"kind", "other"}, 1},
		{"tether_link_up", nil, 1},
		{"tether_link_reconnects_total", nil, 1},
		{"tether_auth_token_changes_total", nil, 1},
	} {
		if got := value(t, after, tc.name, tc.labels...); got != tc.want {
			t.Errorf("after: %s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if s := histogramSum(t, after, "tether_session_duration_seconds"); s != 91 {
		t.Errorf("duration sum = %v, want 91", s)
	}
	if ts := value(t, after, "tether_link_last_connect_timestamp_seconds"); math.Abs(ts-connected) > 5 {
		t.Errorf("last connect timestamp %v, want about %v", ts, connected)
	}
	if age := value(t, after, "tether_link_since_last_connect_seconds"); age < 0 || age > 5 {
		t.Errorf("since last connect = %v, want a few seconds at most", age)
	}

	m.LinkDown()
	if got := value(t, scrape(t, e), "tether_link_up"); got != 0 {
		t.Errorf("tether_link_up after LinkDown = %v", got)
	}

	// The only labels tether's metrics have are fixed, bounded ones: there
	// is nowhere for a user or session id to go.
	allowed := map[string]bool{"proto": true, "reason": true, "limit": true, "direction": true, "kind": true,
		"version": true, "commit": true, "goversion": true, "le": true}
	for name, mf := range after {
		if !strings.HasPrefix(name, "tether_") {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if !allowed[l.GetName()] {
					t.Errorf("%s has unexpected label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func TestHealthz(t *testing.T) {
	var hs healthState
	e := serveLive(t, New(BuildInfo{}, Limits{}).Handler(hs.check))
	if code, body := get(t, e.base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("healthy: %d %q", code, body)
	}
	hs.set("link-reader", "router")
	if code, body := get(t, e.base+"/healthz"); code != http.StatusServiceUnavailable || body != "unhealthy: stalled loops: link-reader, router\n" {
		t.Fatalf("unhealthy: %d %q", code, body)
	}
	hs.set()
	if code, _ := get(t, e.base+"/healthz"); code != http.StatusOK {
		t.Fatalf("recovered: %d", code)
	}
	resp, err := http.Post(e.base+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /healthz: %d", resp.StatusCode)
	}
	if code, _ := get(t, e.base+"/other"); code != http.StatusNotFound {
		t.Fatalf("/other: %d", code)
	}
}

func TestProtobufNegotiation(t *testing.T) {
	e := serveLive(t, New(BuildInfo{}, Limits{}).Handler(nil))
	req, err := http.NewRequest(http.MethodGet, e.base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "application/vnd.google.protobuf") {
		t.Fatalf("Content-Type %q", ct)
	}
	dec := expfmt.NewDecoder(resp.Body, expfmt.Format(resp.Header.Get("Content-Type")))
	var mf dto.MetricFamily
	n := 0
	for ; ; n++ {
		if err := dec.Decode(&mf); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n < 20 {
		t.Fatalf("only %d families in the protobuf scrape", n)
	}
}

func TestSinceLastConnect(t *testing.T) {
	m := New(BuildInfo{}, Limits{})
	now := m.started
	m.now = func() time.Time { return now }
	now = now.Add(30 * time.Second)
	if got := m.sinceLastConnect(); got != 30 {
		t.Fatalf("never connected: %v, want 30 (since start)", got)
	}
	m.LinkUp()
	now = now.Add(7 * time.Second)
	if got := m.sinceLastConnect(); got != 7 {
		t.Fatalf("after connect: %v, want 7", got)
	}
	m.LinkDown()
	now = now.Add(3 * time.Second)
	if got := m.sinceLastConnect(); got != 10 {
		t.Fatalf("after disconnect: %v, want 10", got)
	}
}

func TestSetLimits(t *testing.T) {
	m := New(BuildInfo{}, Limits{MaxTotal: 4})
	m.SetLimits(Limits{MaxPerUser: 1, MaxTotal: 8, AbsoluteTimeout: time.Hour})
	e := serveLive(t, m.Handler(nil))
	mfs := scrape(t, e)
	for name, want := range map[string]float64{
		"tether_config_sessions_per_user_max":            1,
		"tether_config_sessions_max":                     8,
		"tether_config_session_idle_timeout_seconds":     0,
		"tether_config_session_absolute_timeout_seconds": 3600,
	} {
		if got := value(t, mfs, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestNilMetrics: a daemon with metrics off passes a nil *Metrics around.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.SetLimits(Limits{})
	m.SessionOpened(ProtoShell)
	m.SessionClosed(ProtoShell, ReasonUser, time.Second)
	m.LimitRejected(LimitTotal)
	m.TerminalBytesIn(1)
	m.TerminalBytesOut(1)
	m.FrameIn()
	m.FrameOut()
	m.MalformedFrame("x")
	m.LinkUp()
	m.LinkDown()
	m.LinkReconnect()
	m.TokenChanged()
	e := serveLive(t, m.Handler(nil))
	if code, _ := get(t, e.base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := get(t, e.base+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("/metrics on nil Metrics: %d", code)
	}
}

// TestConcurrentRecording is for the race detector.
func TestConcurrentRecording(t *testing.T) {
	m := New(BuildInfo{}, Limits{})
	e := serveLive(t, m.Handler(nil))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				m.SessionOpened(ProtoShell)
				m.TerminalBytesOut(j)
				m.FrameIn()
				m.SessionClosed(ProtoShell, ReasonShellExit, time.Duration(j)*time.Millisecond)
			}
		}()
	}
	scrape(t, e)
	wg.Wait()
	if got := value(t, scrape(t, e), "tether_sessions_closed_total", "reason", ReasonShellExit); got != 800 {
		t.Fatalf("closed = %v, want 800", got)
	}
}

func TestServe(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Off: returns at once.
	if err := Serve(context.Background(), log, "", nil); err != nil {
		t.Fatalf("Serve with metrics off: %v", err)
	}

	// Find a free loopback port, then serve on it through Serve proper.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, log, addr, New(BuildInfo{}, Limits{}).Handler(nil)) }()
	e := &endpoint{base: "http://" + addr}
	var code int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get(e.base + "/healthz")
		if err == nil {
			code = resp.StatusCode
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("Serve never answered: %v", err)
		}
	}
	if code != http.StatusOK {
		t.Fatalf("/healthz via Serve: %d", code)
	}

	// A second Serve on the same address fails instead of hanging.
	if err := Serve(context.Background(), log, addr, nil); err == nil || !strings.Contains(err.Error(), "metrics endpoint") {
		t.Fatalf("Serve on a busy address: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Serve returned")
	}
}

func TestListenAddress(t *testing.T) {
	tests := map[string]string{
		"9110":           "127.0.0.1:9110",
		":9110":          ":9110", // every interface, as net.Listen and the config read it
		"127.0.0.1:9110": "127.0.0.1:9110",
		"[::1]:9110":     "[::1]:9110",
		"0.0.0.0:9110":   "0.0.0.0:9110",
		"localhost:http": "localhost:http",
	}
	for in, want := range tests {
		if got := listenAddress(in); got != want {
			t.Errorf("listenAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSlimBuildHasNoPrometheus guards the nometrics build: client_golang
// and net/http must not sneak back into it.
func TestSlimBuildHasNoPrometheus(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to inspect the nometrics build: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "-tags", "nometrics", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -tags nometrics: %v\n%s", err, out)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		// net/http too: the slim daemon links no HTTP server or client.
		if strings.Contains(p, "prometheus") || p == "net/http" {
			bad = append(bad, p)
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Fatalf("the nometrics build imports %v", bad)
	}
	if !bytes.Contains(out, []byte("github.com/tether-agent/tether/internal/metrics")) {
		t.Fatalf("go list output looks wrong: %s", out)
	}
}

// tether_sessions_restored_total counts the shells a start took back
// from the previous run; it is exported at 0 before any.
func TestSessionsRestored(t *testing.T) {
	m := New(BuildInfo{}, Limits{})
	e := serveLive(t, m.Handler(nil))
	if got := value(t, scrape(t, e), "tether_sessions_restored_total"); got != 0 {
		t.Fatalf("before: %v", got)
	}
	m.SessionsRestored(3)
	if got := value(t, scrape(t, e), "tether_sessions_restored_total"); got != 3 {
		t.Fatalf("after restoring 3: %v", got)
	}
	var nilm *Metrics
	nilm.SessionsRestored(1)
}

func TestHealthHandler(t *testing.T) {
	tests := []struct {
		name     string
		health   func() (bool, []string)
		method   string
		wantCode int
		wantBody string
	}{
		{"nil health", nil, http.MethodGet, 200, "ok\n"},
		{"healthy", func() (bool, []string) { return true, nil }, http.MethodGet, 200, "ok\n"},
		{"stalled", func() (bool, []string) { return false, []string{"janitor", "router"} }, http.MethodGet, 503, "unhealthy: stalled loops: janitor, router\n"},
		{"head", func() (bool, []string) { return true, nil }, http.MethodHead, 200, ""},
		{"post", nil, http.MethodPost, 405, "method not allowed\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			healthHandler(tt.health).ServeHTTP(rec, httptest.NewRequest(tt.method, "/healthz", nil))
			if rec.Code != tt.wantCode || (tt.method != http.MethodHead && rec.Body.String() != tt.wantBody) {
				t.Fatalf("%d %q, want %d %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
		})
	}
}
