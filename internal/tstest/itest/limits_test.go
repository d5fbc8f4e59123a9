package itest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

func shellError(t *testing.T, err error) string {
	t.Helper()
	var se *mockserver.ShellError
	if !errors.As(err, &se) {
		t.Fatalf("want a shell error reply, got %v", err)
	}
	return se.Message
}

func TestLimits(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"MaxPerUser": 2, "MaxTotal": 3, "StopGrace": "100ms"},
	})
	e.waitDevice()
	a1 := e.open("alice@tether.local")
	e.open("alice@tether.local")
	_, err := e.tryOpen("alice@tether.local")
	if got := shellError(t, err); got != "user has too many open sessions" {
		t.Fatalf("per-user limit body %q", got)
	}
	e.open("bob@tether.local")
	_, err = e.tryOpen("carol@tether.local")
	if got := shellError(t, err); got != "too many shells spawned" {
		t.Fatalf("total limit body %q", got)
	}
	for name, want := range map[string]float64{
		`tether_sessions_active{proto="shell"}`:                   3,
		`tether_sessions_opened_total{proto="shell"}`:             3,
		`tether_session_limit_rejections_total{limit="per_user"}`: 1,
		`tether_session_limit_rejections_total{limit="total"}`:    1,
		`tether_config_sessions_max`:                              3,
		`tether_link_up`:                                          1,
	} {
		if got := e.metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// Ending a terminal frees its slot for someone else. The user's own
	// stop, as mender-cli's CTRL+] sends: a real server tells the device
	// nothing when a user just closes the socket.
	_ = a1.Stop()
	e.waitStop(a1)
	a1.Close()
	eventually(t, 5*time.Second, "slot freed", func() bool {
		term, err := e.tryOpen("carol@tether.local")
		if err != nil {
			return false
		}
		e.run(term, "true")
		return true
	})
}

func TestEvictOldest(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"MaxPerUser": 1, "EvictOldest": true, "StopGrace": "100ms"},
	})
	e.waitDevice()
	old := e.open("alice@tether.local")
	e.run(old, "true")
	fresh := e.open("alice@tether.local")
	if body := e.waitStop(old); !strings.Contains(body, "replaced") {
		t.Fatalf("evicted session's stop body %q", body)
	}
	e.run(fresh, "echo still-here")
}

func TestExpiry(t *testing.T) {
	tests := []struct {
		name     string
		sessions map[string]interface{}
		keepBusy bool
		want     string
		after    time.Duration
	}{
		{"idle", map[string]interface{}{"ExpireAfterIdle": 2}, false, "idle for 2s", 2 * time.Second},
		{"absolute despite activity", map[string]interface{}{"ExpireAfter": 2, "ExpireAfterIdle": 60}, true, "open for 2s", 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.sessions["StopGrace"] = "100ms"
			e := newEnv(t, map[string]interface{}{"Sessions": tt.sessions})
			e.waitDevice()
			begin := time.Now()
			term := e.open(adminEmail)
			stopped := make(chan string, 1)
			go func() { stopped <- e.waitStop(term) }()
			tick := time.NewTicker(300 * time.Millisecond)
			defer tick.Stop()
			// Armed once: a timer re-armed on every turn would never fire
			// while the ticker keeps the loop turning.
			timeout := time.NewTimer(10 * time.Second)
			defer timeout.Stop()
			for {
				select {
				case body := <-stopped:
					took := time.Since(begin)
					if !strings.Contains(body, tt.want) {
						t.Fatalf("stop body %q, want %q", body, tt.want)
					}
					if took < tt.after || took > tt.after+1500*time.Millisecond {
						t.Fatalf("expired after %v, want %v (+ within a second)", took, tt.after)
					}
					return
				case <-tick.C:
					if tt.keepBusy {
						_, _ = term.Write([]byte("true\n"))
					}
				case <-timeout.C:
					t.Fatal("session did not expire")
				}
			}
		})
	}
}

func TestMissingPongEndsSession(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		// The timeout leaves the answering terminal ample room on a loaded CI
		// machine: it misses ten pings before it would be cut off.
		"Sessions": map[string]interface{}{"PingInterval": "200ms", "PongTimeout": "2s", "StopGrace": "100ms"},
	})
	e.waitDevice()
	// A terminal that answers pings keeps its session well past the timeout.
	alive := e.open("alice@tether.local")
	silent := e.open("bob@tether.local", mockserver.WithoutAutoPong())
	begin := time.Now()
	body := e.waitStop(silent)
	if !strings.Contains(body, "health check failed") {
		t.Fatalf("stop body %q", body)
	}
	if took := time.Since(begin); took < 2*time.Second {
		t.Fatalf("ended after %v, before the pong timeout", took)
	}
	time.Sleep(500 * time.Millisecond)
	e.run(alive, "echo alive")
}

// After the link drops, the server hands every user connection a new
// session id, so the old shells are orphans. With Sessions.DetachedTimeout
// 0 (no reattach) they still do not lock their user out until the health
// check gives up, unlike upstream: a new session of that user replaces an
// orphan. A live session is still protected.
func TestOrphanedSessionDoesNotLockOut(t *testing.T) {
	e := newEnv(t, map[string]interface{}{"Sessions": map[string]interface{}{"MaxPerUser": 1, "StopGrace": "100ms", "DetachedTimeout": "0s"}})
	d := e.waitDevice()
	old := e.open("alice@tether.local")
	e.run(old, "(exec sleep 314) &")
	d.Close()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if _, err := e.srv.WaitReconnect(ctx, d); err != nil {
		t.Fatal(err)
	}
	fresh := e.open("alice@tether.local")
	e.run(fresh, "echo replaced")
	eventually(t, 5*time.Second, "orphan torn down", func() bool { return !processExists("sleep 314") })
	// The new session is live: a second one is still refused.
	_, err := e.tryOpen("alice@tether.local")
	if got := shellError(t, err); got != "user has too many open sessions" {
		t.Fatalf("per-user limit body %q", got)
	}
}
