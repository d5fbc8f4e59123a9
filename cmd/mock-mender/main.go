// Command mock-mender is a mock Mender server for tests and demos, and a
// tiny user-side client for it.
//
//	mock-mender serve   [--listen ADDR] [--users EMAIL:PASS,...] [--key-file F] [--log-level L] [--login-link EMAIL] [--allowed-host NAME,...]
//	                    [--tls-cert F --tls-key F | --tls-self-signed DIR]
//	                    [--connect-rate R [--connect-burst N] [--connect-retry-after D]] [--connect-log F]
//	mock-mender attach  [--server URL] [--user EMAIL] [--password P] [DEVICE_ID]
//	mock-mender devices [--server URL] [--user EMAIL] [--password P]
//	mock-mender cp      [--server URL] [--user EMAIL] [--password P] SRC DEST   (DEVICE:PATH on one side)
//	mock-mender port-forward [--server URL] [--bind HOST] DEVICE_ID [tcp|udp/]LOCAL[:[HOST:]REMOTE]...
//
// serve prints the base URL on stdout once it listens (and, with
// --login-link, a one-time login link for the web console on the next
// line) and exits cleanly on SIGINT/SIGTERM; the web console is at the base
// URL. attach opens a remote terminal on a device (the only
// connected one by default) in raw mode; "~." at the start of a line
// disconnects. SIGUSR1 makes serve drop every device socket (1011) and
// stay up, for a fleet bench (internal/tools/bench/fleetbench). Flags default to MOCK_MENDER_* environment variables (see
// -h of each command).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tether-agent/tether/internal/mockserver"
)

const usage = `usage: mock-mender <command> [flags]

commands:
  serve     run the mock server
  attach    open a remote terminal on a device
  devices   list devices and their connection status
  cp        copy a file to or from a device (DEVICE:PATH on one side)
  port-forward  forward local ports to a device, like mender-cli

Run "mock-mender <command> -h" for the flags of a command.
`

// Environment variables read as flag defaults.
const (
	envListen        = "MOCK_MENDER_LISTEN"
	envUsers         = "MOCK_MENDER_USERS"
	envAllowedHosts  = "MOCK_MENDER_ALLOWED_HOSTS"
	envKeyFile       = "MOCK_MENDER_KEY_FILE"
	envTLSCert       = "MOCK_MENDER_TLS_CERT"
	envTLSKey        = "MOCK_MENDER_TLS_KEY"
	envTLSSelfSigned = "MOCK_MENDER_TLS_SELF_SIGNED"
	envLogLevel      = "MOCK_MENDER_LOG_LEVEL"
	envServer        = "MOCK_MENDER_SERVER"
	envUser          = "MOCK_MENDER_USER"
	envPassword      = "MOCK_MENDER_PASSWORD"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "mock-mender:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "attach":
		return attach(ctx, args[1:], stdin, stdout, stderr)
	case "devices":
		return devices(ctx, args[1:], stdout, stderr)
	case "cp":
		return cp(ctx, args[1:], stdout, stderr)
	case "port-forward":
		return portForward(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// clientFlags are the flags of the user-side commands.
type clientFlags struct {
	server   string
	user     string
	password string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", envOr(envServer, "http://127.0.0.1:8080"), "server base URL (env "+envServer+")")
	fs.StringVar(&c.user, "user", envOr(envUser, mockserver.DefaultUser), "user e-mail (env "+envUser+")")
	fs.StringVar(&c.password, "password", envOr(envPassword, mockserver.DefaultPassword), "user password (env "+envPassword+")")
}

func devices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mock-mender devices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	tok, err := mockserver.Login(ctx, cf.server, cf.user, cf.password)
	if err != nil {
		return err
	}
	devs, err := mockserver.ListDevices(ctx, cf.server, tok)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-36s  %-8s  %s\n", "ID", "AUTH", "CONNECT")
	for _, d := range devs {
		fmt.Fprintf(stdout, "%-36s  %-8s  %s\n", d.ID, d.Status, connectWord(d.Connected))
	}
	return nil
}

func connectWord(connected bool) string {
	if connected {
		return "connected"
	}
	return "disconnected"
}

// pickDevice returns the only connected device, or explains why there is
// no single one.
func pickDevice(devs []mockserver.RemoteDevice) (string, error) {
	var connected []string
	for _, d := range devs {
		if d.Connected {
			connected = append(connected, d.ID)
		}
	}
	switch len(connected) {
	case 1:
		return connected[0], nil
	case 0:
		if len(devs) == 0 {
			return "", errors.New("no device known to the server")
		}
		ids := make([]string, len(devs))
		for i, d := range devs {
			ids[i] = d.ID
		}
		return "", fmt.Errorf("no device is connected (known: %s)", strings.Join(ids, ", "))
	default:
		return "", fmt.Errorf("several devices are connected, name one: %s", strings.Join(connected, ", "))
	}
}
