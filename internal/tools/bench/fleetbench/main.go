// Command fleetbench runs N real tether daemons (1,000 by default) against
// one mock-mender on loopback and prints, per server event, what the
// server saw beside the simulator's prediction, and the fleet's cost at
// rest (docs/benchmarks.md, "Fleet bench"). `make bench-fleet` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/tether-agent/tether/internal/tools/fleetbench"
	"github.com/tether-agent/tether/internal/tools/fleetsim"
)

func main() {
	n := flag.Int("n", 1000, "daemons")
	tether := flag.String("tether", "bin/tether", "tether binary")
	mock := flag.String("mock", "bin/mock-mender", "mock-mender binary")
	events := flag.String("events", "creds-before,creds,boot-before,boot,rest,drop,down10,down60,limit,limit-upstream,boot-down30,rotate", "events to run, in this order")
	rest := flag.Duration("rest", time.Minute, "window of the at-rest figures")
	uidBase := flag.Int("uid-base", 200000, "creds, rotate: run daemon i as uid uid-base+i (as root), so each token file's inotify instance counts against its own user; 0: all as this user")
	flag.Parse()
	if err := run(*n, *tether, *mock, strings.Split(*events, ","), *rest, *uidBase); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

func run(n int, tether, mock string, events []string, rest time.Duration, uidBase int) error {
	for _, b := range []string{tether, mock} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (run make build)", err)
		}
	}
	// Each daemon holds a few descriptors in the bench (its pipes), the
	// server one per device.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(4*n+256) {
		lim.Cur = min(lim.Max, uint64(4*n+256))
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if os.Geteuid() != 0 {
		uidBase = 0
	}
	dir, err := os.MkdirTemp("", "fleetbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	f, err := fleetbench.New(fleetbench.Options{Tether: tether, Mock: mock, N: n, Dir: dir, Progress: os.Stderr})
	if err != nil {
		return err
	}
	defer f.Close()
	ctx := context.Background()
	if err := f.StartServer(); err != nil {
		return err
	}
	var results []fleetbench.Result
	var restFig *fleetbench.RestFigures
	show := func(r fleetbench.Result) {
		results = append(results, r)
		fleetbench.Header(os.Stderr)
		fleetbench.Row(os.Stderr, r)
	}
	for _, ev := range events {
		fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), ev)
		switch ev {
		case "boot-before":
			f.SetReconnect(map[string]string{"StartJitter": "0s"})
			r := f.Boot(ctx, "devices boot together, server up, StartJitter 0 (before)", 0)
			f.SetReconnect(nil)
			show(r)
		case "boot":
			show(f.Boot(ctx, "devices boot together, server up", 0))
		case "creds-before":
			f.SetReconnect(map[string]string{"StartJitter": "0s"})
			r := f.BootCredentials(ctx, "daemons up, every first token in one instant, StartJitter 0 (before)", uidBase)
			f.SetReconnect(nil)
			show(r)
		case "creds":
			show(f.BootCredentials(ctx, "daemons up, every first token in one instant", uidBase))
		case "boot-down30":
			show(f.Boot(ctx, "devices boot together, server down 30 s", 30*time.Second))
		case "rest":
			rf, err := f.Rest(rest)
			if err != nil {
				return err
			}
			restFig = &rf
			fleetbench.RestTable(os.Stderr, rf)
		case "drop":
			show(f.Drop(ctx))
		case "down10":
			show(f.Outage(ctx, "server down 10 s", 10*time.Second, fleetsim.Scenario{}))
		case "down60":
			show(f.Outage(ctx, "server down 60 s", 60*time.Second, fleetsim.Scenario{}))
		case "limit", "limit-upstream":
			rate := max(1, n/5)
			ra := 30 * time.Second
			name := fmt.Sprintf("server restarts, accepts %d/s, 503 Retry-After: 30 above", rate)
			if ev == "limit-upstream" {
				ra = 0
				name = fmt.Sprintf("server restarts, accepts %d/s, 503 without Retry-After above (upstream)", rate)
			}
			show(f.Outage(ctx, name, 0, fleetsim.Scenario{Rate: float64(rate), Burst: rate, LimitRetryAfter: ra},
				"--connect-rate", fmt.Sprint(rate), "--connect-burst", fmt.Sprint(rate), "--connect-retry-after", ra.String()))
			// Back to a server without the limit for what follows.
			f.StopServer()
			if err := f.StartServer(); err != nil {
				return err
			}
			if err := f.Ready(ctx, time.Now().Add(-time.Second)); err != nil {
				return err
			}
		case "rotate":
			show(f.Rotate(ctx, uidBase))
		default:
			return fmt.Errorf("unknown event %q", ev)
		}
	}
	fmt.Printf("fleet bench: %d tether daemons against one mock-mender on loopback (%s)\n\n", n, time.Now().UTC().Format("2006-01-02"))
	fleetbench.Header(os.Stdout)
	for _, r := range results {
		fleetbench.Row(os.Stdout, r)
	}
	if restFig != nil {
		fmt.Println()
		fleetbench.RestTable(os.Stdout, *restFig)
	}
	return nil
}
