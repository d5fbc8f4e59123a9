package itest

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// A server that answers 503 with Retry-After keeps the device away at
// least that long; then the device is back.
func TestRetryAfterIsObeyed(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Reconnect": map[string]interface{}{"BackoffBase": "50ms", "BackoffMax": "10s", "FirstJitter": "100ms"},
	})
	first := e.waitDevice()

	target, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	relay := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	var dials []time.Time
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		dials = append(dials, time.Now())
		n := len(dials)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "2")
			http.Error(w, "shedding load", http.StatusServiceUnavailable)
			return
		}
		relay.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)

	// New credentials pointing at the proxy: the device redials at once,
	// is told to come back in 2 s, and does.
	e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), proxy.URL)
	if _, err := e.srv.WaitReconnect(e.ctx, first); err != nil {
		t.Fatalf("device did not come back through the proxy: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dials) < 2 {
		t.Fatalf("%d dials through the proxy", len(dials))
	}
	if away := dials[1].Sub(dials[0]); away < 2*time.Second {
		t.Fatalf("device redialled %v after a 503 with Retry-After: 2", away)
	} else if away > 2*time.Second+10*time.Second {
		t.Fatalf("device stayed away %v, beyond Retry-After plus the cap", away)
	}
}
