// Command tether is the device-side remote terminal agent: a drop-in
// replacement for mender-connect with the same command line.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tether-agent/tether/internal/config"
	"github.com/tether-agent/tether/internal/daemon"
	"github.com/tether-agent/tether/internal/handover"
	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/version"
)

const usage = `usage: tether [global options] command

commands:
  daemon         run the agent
  version        print the version
  check-config   print the effective configuration (secrets redacted) or the errors
  upgrade PATH   make the running daemon exec the binary at PATH in place,
                 keeping its shell sessions (docs/operations.md)
  help           show this help

global options (before the command, as with mender-connect):
  -c, --config FILE            main configuration file (default %s)
  -b, --fallback-config FILE   fallback configuration file (default %s)
  -d, --debug                  log at debug level
  -dd, --trace                 log at trace level
  -v, --version                print the version
  -h, --help                   show this help

Every configuration key can also be set from the environment with the
prefix TETHER_ (for example TETHER_USER, TETHER_SESSIONS_MAXPERUSER).
`

// The main goroutine keeps the main thread for itself. File transfer
// switches one thread at a time to the shell account's filesystem ids and
// lets that thread die with its goroutine; the main thread cannot die, so
// were it picked it would stay parked with those ids, and /proc/PID/status
// (which shows the main thread) would say the daemon runs as that account.
func init() { runtime.LockOSThread() }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tether", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, usage, config.DefaultPath, config.DefaultFallbackPath) }
	var path, fallback string
	var debug, trace, showVersion bool
	for _, n := range []string{"config", "c"} {
		fs.StringVar(&path, n, config.DefaultPath, "")
	}
	for _, n := range []string{"fallback-config", "b"} {
		fs.StringVar(&fallback, n, config.DefaultFallbackPath, "")
	}
	for _, n := range []string{"debug", "d"} {
		fs.BoolVar(&debug, n, false, "")
	}
	for _, n := range []string{"trace", "dd"} {
		fs.BoolVar(&trace, n, false, "")
	}
	for _, n := range []string{"version", "v"} {
		fs.BoolVar(&showVersion, n, false, "")
	}
	help := func() int {
		fmt.Fprintf(stdout, usage, config.DefaultPath, config.DefaultFallbackPath)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return help()
		}
		return 1
	}
	cmd := fs.Arg(0)
	if showVersion {
		cmd = "version"
	}
	// Commands take no arguments; -h/--help after any of them asks for
	// the usage rather than running it.
	if cmd == "upgrade" && fs.NArg() == 2 && !strings.HasPrefix(fs.Arg(1), "-") {
		return upgrade(fs.Arg(1), stdout, stderr)
	}
	if fs.NArg() > 1 {
		for _, a := range fs.Args()[1:] {
			switch a {
			case "-h", "--help", "-help", "help":
				return help()
			}
		}
		fmt.Fprintf(stderr, "tether: %s takes no arguments, got %q (global options go before the command; see tether --help)\n", cmd, fs.Arg(1))
		return 1
	}
	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "%s\truntime: %s\n", version.Version, version.GoVersion())
		return 0
	case "help", "h":
		return help()
	case "check-config":
		return checkConfig(path, fallback, stdout, stderr)
	case "daemon":
		return runDaemon(path, fallback, debug, trace, stderr)
	case "upgrade":
		fmt.Fprintln(stderr, "tether: upgrade takes the new binary's path: tether upgrade PATH")
		return 1
	case "":
		fs.Usage()
		return 1
	default:
		fmt.Fprintf(stderr, "tether: unknown command %q (see tether help)\n", cmd)
		return 1
	}
}

// upgrade asks the running daemon to exec the binary at path, keeping its
// sessions.
func upgrade(path string, stdout, stderr io.Writer) int {
	pid, err := handover.RequestUpgrade(daemon.RuntimeDir(), path, 30*time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "tether: upgrade:", err)
		return 1
	}
	fmt.Fprintf(stdout, "tether: the daemon (pid %d) took the upgrade to %s; its log says how it went\n", pid, path)
	return 0
}

func checkConfig(path, fallback string, stdout, stderr io.Writer) int {
	cfg, warnings, err := config.Load(config.LoadOptions{Path: path, FallbackPath: fallback})
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tether: configuration is invalid:\n%v\n", err)
		return 1
	}
	b, err := cfg.Redacted()
	if err != nil {
		fmt.Fprintln(stderr, "tether:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", b)
	return 0
}

func runDaemon(path, fallback string, debug, trace bool, stderr io.Writer) int {
	cfg, warnings, err := config.Load(config.LoadOptions{Path: path, FallbackPath: fallback})
	level, format, journal := "info", "text", "auto"
	if cfg != nil {
		level, format, journal = cfg.Log.Level, cfg.Log.Format, cfg.Log.Journal
	}
	if debug {
		level = "debug"
	}
	if trace {
		level = "trace"
	}
	log, lerr := logging.New(logging.Options{Level: level, Format: format, Journal: journal, Writer: stderr})
	if lerr != nil {
		fmt.Fprintln(stderr, "tether: logging:", lerr)
		return 1
	}
	for _, w := range append(warnings, config.PermissionWarnings(config.LoadOptions{Path: path, FallbackPath: fallback})...) {
		log.Warn(w)
	}
	if err != nil {
		log.Error("configuration is invalid; not starting", "error", err)
		return 1
	}
	if err := closeInheritedFDs(); err != nil {
		log.Error("cannot keep inherited descriptors from the shells; not starting", "error", err)
		return 1
	}
	limit, source := setMemoryLimit()
	log.Debug("Go memory limit", "bytes", limit, "from", source)
	ctx, stop := stopContext(log)
	resetInheritedIgnores()
	defer stop()
	if err := daemon.Run(ctx, daemon.Options{Config: cfg, Log: log, Version: version.Version, Subreaper: true,
		LoginRecords: testLoginRecords()}); err != nil {
		log.Error("tether failed", "error", err)
		return 1
	}
	return 0
}
