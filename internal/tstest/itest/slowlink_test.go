package itest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/slowpath"
)

// behindSlowPath is a prepare function for newEnvWith: the daemon reaches
// the server only through a relay that reads the device's side at rate
// with the kernel's default socket buffers, as a congested path does (the
// proxy of proxy_test.go shrinks its receive buffer, which hides the bytes
// a real path holds).
func behindSlowPath(t *testing.T, p **slowpath.Proxy, o slowpath.Options) func(*env) {
	return func(e *env) {
		sp, err := slowpath.Listen(e.addr, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := sp.Close(); err != nil {
				t.Errorf("slow path: %v", err)
			}
		})
		*p = sp
		e.auth.Set(e.srv.IssueDeviceToken(e.deviceID), sp.URL())
	}
}

// One session floods (`yes`) through a path that takes 100 KB/s; another
// session's keystroke echo comes back within a second, every time: the
// link keeps no more on its way to the server than the path drains in a
// fraction of a second (Link.LatencyTarget), wherever those bytes wait.
// The flood still gets most of the link.
func TestSlowLinkEchoBesideFlood(t *testing.T) {
	t.Parallel()
	const (
		rate = 100_000
		keys = 20
	)
	var p *slowpath.Proxy
	e := newEnvWith(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "100ms"},
	}, behindSlowPath(t, &p, slowpath.Options{Rate: rate}))
	e.waitDevice()
	floodT, quietT := e.open("alice@tether.local"), e.open("bob@tether.local")
	floodR := readTerm(t, floodT)
	fmt.Fprint(floodT, "yes flood-flood-flood-flood-flood-flood-flood-flood\n")
	floodR.wait("flood-flood\r\nflood-flood", 15*time.Second)
	e.expect(quietT, "$ ")
	// Let the flood fill whatever the path holds before timing.
	time.Sleep(3 * time.Second)
	up0, start := p.Up(), time.Now()
	var lat []time.Duration
	for i := range keys {
		time.Sleep(300 * time.Millisecond)
		marker := fmt.Sprintf("k%03dq", i)
		sent := time.Now()
		fmt.Fprintf(quietT, "#%s", marker)
		ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
		_, err := quietT.Expect(ctx, marker)
		cancel()
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		lat = append(lat, time.Since(sent))
		fmt.Fprint(quietT, "\x15") // erase the line (VKILL)
	}
	elapsed := time.Since(start)
	link := float64(p.Up()-up0) / elapsed.Seconds()
	slices.Sort(lat)
	p50, worst := lat[len(lat)/2], lat[len(lat)-1]
	t.Logf("%d B/s path: echo p50 %v, worst %v over %d keystrokes; the link carried %.0f B/s (%.0f %%)",
		rate, p50.Round(time.Millisecond), worst.Round(time.Millisecond), len(lat), link, 100*link/rate)
	// p99 of 20 is the worst; 1 s is twice what the bench measures, so a
	// loaded machine does not make it flake, and half what the link
	// without a bound on its bytes in flight takes.
	if worst > time.Second {
		t.Errorf("a keystroke echo took %v behind the flood on a %d B/s path (want ≤ 1 s); all: %v", worst, rate, lat)
	}
	if link < 0.8*rate {
		t.Errorf("the link carried %.0f B/s of a %d B/s path: the bound costs throughput", link, rate)
	}
	if c := e.srv.DeviceConnects(e.deviceID); c != 1 {
		t.Errorf("%d connections: the slow path's link dropped", c)
	}
}
