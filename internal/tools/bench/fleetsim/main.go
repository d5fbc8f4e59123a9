// Command fleetsim prints what the reconnect policy does to a server with
// a fleet of devices: dials at once and how long devices stay away after
// the server is back, for the configured policy next to the rules before
// the first jitter, the start jitter and the one-minute cap. `make bench` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/reconnect"
	"github.com/tether-agent/tether/internal/tools/fleetsim"
)

func main() {
	d := config.Default().Reconnect
	base := flag.Duration("base", d.BackoffBase.Duration(), "Reconnect.BackoffBase")
	maxWait := flag.Duration("max", d.BackoffMax.Duration(), "Reconnect.BackoffMax")
	jitter := flag.Duration("first-jitter", d.FirstJitter.Duration(), "Reconnect.FirstJitter")
	startJitter := flag.Duration("start-jitter", d.StartJitter.Duration(), "Reconnect.StartJitter")
	devices := flag.Int("devices", 10000, "fleet size")
	flag.Parse()
	if *devices <= 0 || *base <= 0 || *maxWait < *base || *jitter < 0 || *startJitter < 0 {
		fmt.Fprintln(os.Stderr, "fleetsim: need devices > 0, base > 0, max >= base, first-jitter, start-jitter >= 0")
		os.Exit(2)
	}
	fleetsim.Table(os.Stdout, "reconnect policy", reconnect.Policy{Base: *base, Max: *maxWait, FirstJitter: *jitter, StartJitter: *startJitter}, *devices)
	fmt.Println()
	fleetsim.Table(os.Stdout, "previous rules", reconnect.Policy{Base: time.Second, Max: 5 * time.Minute}, *devices)
}
