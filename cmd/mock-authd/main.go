// Command mock-authd simulates Mender's authentication service
// (io.mender.AuthenticationManager) on D-Bus for tests and demos.
//
// Fixed mode hands out --token and --server-url. Server mode (--server)
// authenticates against a (mock) Mender server like a device does.
// SIGUSR1 rotates the token, SIGUSR2 clears it, SIGHUP re-authenticates;
// --control offers the same and more over a unix socket (see mockauth).
package main

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/mockauth"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mock-authd:", err)
		os.Exit(1)
	}
}

type flags struct {
	busAddress string
	token      string
	serverURL  string
	server     string
	mac        string
	keyFile    string
	keyType    string
	control    string
	logLevel   string
	retryMin   time.Duration
	retryMax   time.Duration
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("mock-authd", flag.ContinueOnError)
	fs.StringVar(&f.busAddress, "bus-address", "", "D-Bus address (default: the system bus, or DBUS_SYSTEM_BUS_ADDRESS)")
	fs.StringVar(&f.token, "token", "", "fixed token to hand out (fixed mode)")
	fs.StringVar(&f.serverURL, "server-url", "", "server URL to hand out (default in server mode: --server)")
	fs.StringVar(&f.server, "server", "", "Mender server base URL to authenticate against (server mode)")
	fs.StringVar(&f.mac, "mac", mockauth.DefaultMAC, "device identity (mac) for server mode")
	fs.StringVar(&f.keyFile, "key-file", "", "device private key (PKCS #8 PEM), created if missing (default: a new key per run)")
	fs.StringVar(&f.keyType, "key-type", "ed25519", "type of a generated key: ed25519 or rsa")
	fs.StringVar(&f.control, "control", "", "unix socket path for the control protocol")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&f.retryMin, "retry-min", 500*time.Millisecond, "first backoff after a failed authentication")
	fs.DurationVar(&f.retryMax, "retry-max", 10*time.Second, "longest backoff after failed authentications")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if f.server != "" && f.token != "" {
		return f, errors.New("--token and --server exclude each other")
	}
	return f, nil
}

func run(args []string) error {
	f, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	var key crypto.Signer
	if f.server != "" {
		if f.keyFile != "" {
			key, err = mockauth.LoadOrCreateKey(f.keyFile, f.keyType)
		} else {
			key, err = mockauth.GenerateKey(f.keyType)
		}
		if err != nil {
			return err
		}
	}

	// Take over the control signals before the service becomes visible on
	// the bus: whoever sees it may signal us at once.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	var conn *dbus.Conn
	if f.busAddress != "" {
		conn, err = dbus.Connect(f.busAddress)
	} else {
		conn, err = dbus.ConnectSystemBus()
	}
	if err != nil {
		return fmt.Errorf("connecting to the bus: %w", err)
	}
	defer conn.Close()

	svc, err := mockauth.New(log, conn, mockauth.Options{
		Token:     f.token,
		ServerURL: f.serverURL,
		Server:    f.server,
		MAC:       f.mac,
		Key:       key,
		RetryMin:  f.retryMin,
		RetryMax:  f.retryMax,
	})
	if err != nil {
		return err
	}
	defer svc.Close()

	var wg sync.WaitGroup
	defer func() {
		cancel() // ends the control server and rotations before waiting
		wg.Wait()
	}()
	controlErr := make(chan error, 1)
	if f.control != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			controlErr <- svc.ServeControl(ctx, f.control)
		}()
	}

	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			return nil
		case <-conn.Context().Done():
			return errors.New("lost the bus connection")
		case err := <-controlErr:
			if err != nil {
				return err
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				log.Info("SIGUSR1: rotating")
				// Rotation may wait for the server; keep reacting to
				// signals meanwhile.
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := svc.Rotate(ctx); err != nil {
						log.Warn("rotation failed", "err", err)
					}
				}()
			case syscall.SIGUSR2:
				log.Info("SIGUSR2: clearing")
				svc.Clear()
			case syscall.SIGHUP:
				log.Info("SIGHUP: fetching", "started", svc.Fetch())
			}
		}
	}
}
