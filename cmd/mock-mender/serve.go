package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/tether-agent/tether/internal/mockserver"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mock-mender serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", envOr(envListen, "127.0.0.1:8080"), "listen address (env "+envListen+")")
	users := fs.String("users", envOr(envUsers, mockserver.DefaultUser+":"+mockserver.DefaultPassword),
		"users as email:password,... (env "+envUsers+")")
	keyFile := fs.String("key-file", envOr(envKeyFile, ""),
		"JWT signing key file, created if missing, so restarts keep tokens valid (env "+envKeyFile+"; default: a new key per run)")
	logLevel := fs.String("log-level", envOr(envLogLevel, "info"), "debug, info, warn or error (env "+envLogLevel+")")
	pingInterval := fs.Duration("device-ping-interval", mockserver.DefaultDevicePingInterval, "websocket ping period towards devices")
	readTimeout := fs.Duration("read-timeout", mockserver.DefaultReadTimeout, "drop a device (or user) the server has heard nothing from for this long")
	lenient := fs.Bool("lenient", false, "forgiving rules instead of the real server's: user sessions survive a device reconnect, the device hears \"user disconnected\", no 1 MiB frame limit, no byte-limit cut unless --session-byte-limit is given")
	byteLimit := fs.Int64("session-byte-limit", mockserver.DefaultSessionByteLimit, "terminal output per user session before the server stops it (<0: unlimited)")
	lifetime := fs.Duration("token-lifetime", mockserver.DefaultTokenLifetime, "validity of issued tokens")
	strict := fs.Bool("strict", false, "close a device connection on an undecodable frame, like the real server")
	allowedHosts := fs.String("allowed-host", envOr(envAllowedHosts, ""),
		"host names, comma-separated, that requests may name besides IP addresses and localhost; others are refused with 421 against DNS rebinding (env "+envAllowedHosts+")")
	loginLink := fs.String("login-link", "", "print a one-time link that logs a browser into the web console as this user, on a second line of stdout")
	tlsCert := fs.String("tls-cert", envOr(envTLSCert, ""), "serve HTTPS/WSS with this certificate (PEM, chain) and --tls-key (env "+envTLSCert+")")
	tlsKey := fs.String("tls-key", envOr(envTLSKey, ""), "private key (PEM) of --tls-cert (env "+envTLSKey+")")
	tlsSelfSigned := fs.String("tls-self-signed", envOr(envTLSSelfSigned, ""),
		"serve HTTPS/WSS with a fresh self-signed certificate for the listen address, localhost and --allowed-host names, written to DIR/"+
			mockserver.SelfSignedCertFile+" for clients to trust (key: DIR/"+mockserver.SelfSignedKeyFile+", 0600) (env "+envTLSSelfSigned+")")
	connectRate := fs.Float64("connect-rate", 0, "accept at most this many device connects a second (a token bucket of --connect-burst) and answer the rest 503 \""+mockserver.StartingUpText+"\", as the real server's pending change does; 0: no limit")
	connectBurst := fs.Int("connect-burst", 0, "bucket size of --connect-rate (default: the rate)")
	connectRetryAfter := fs.Duration("connect-retry-after", 0, "Retry-After sent with the 503 of --connect-rate (whole seconds; 0: none, as upstream)")
	connectLog := fs.String("connect-log", "", "append a line per device-endpoint request to this file: unix nanoseconds, answer (101 accepted, else the HTTP status), device id (- when unknown)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *connectRate < 0 || *connectBurst < 0 || *connectRetryAfter < 0 {
		return errors.New("--connect-rate, --connect-burst and --connect-retry-after must not be negative")
	}
	var onConnect func(mockserver.ConnectEvent)
	if *connectLog != "" {
		f, err := os.OpenFile(*connectLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--connect-log: %w", err)
		}
		defer f.Close()
		onConnect = connectLogger(f)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	userMap, err := parseUsers(*users)
	if err != nil {
		return fmt.Errorf("--users: %w", err)
	}
	var key []byte
	if *keyFile != "" {
		if key, err = loadOrCreateKey(*keyFile); err != nil {
			return err
		}
	}
	if *byteLimit == 0 {
		return errors.New("--session-byte-limit: 0 is not a limit; use a negative value for unlimited")
	}
	if *lenient && !flagSet(fs, "session-byte-limit") {
		*byteLimit = 0 // Lenient's default: no cut
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	tlsCfg, err := serveTLS(log, *listen, splitList(*allowedHosts), *tlsCert, *tlsKey, *tlsSelfSigned)
	if err != nil {
		return err
	}
	s := mockserver.New(mockserver.Options{
		Log:                log,
		Users:              userMap,
		SigningKey:         key,
		DevicePingInterval: *pingInterval,
		ReadTimeout:        *readTimeout,
		Lenient:            *lenient,
		SessionByteLimit:   *byteLimit,
		TokenLifetime:      *lifetime,
		Strict:             *strict,
		AllowedHosts:       splitList(*allowedHosts),
		TLSConfig:          tlsCfg,
		ConnectLimit:       mockserver.ConnectLimit{Rate: *connectRate, Burst: *connectBurst, RetryAfter: *connectRetryAfter},
		OnConnect:          onConnect,
	})
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGUSR1 drops every device socket (1011) and the server stays up:
	// the event "the server sheds its sockets" of a fleet bench.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				log.Info("SIGUSR1: closing every device connection")
				log.Info("closed device connections", "count", s.CloseDevices())
			}
		}
	}()
	var link string
	if *loginLink != "" {
		if link, err = s.LoginLink(*loginLink); err != nil {
			return fmt.Errorf("--login-link: %w", err)
		}
	}
	url, err := s.Start(*listen)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, url)
	if link != "" {
		fmt.Fprintln(stdout, url+link)
	}
	<-ctx.Done()
	log.Info("shutting down")
	return s.Close()
}

// splitList reads "a,b,c", ignoring blanks.
func splitList(spec string) []string {
	var out []string
	for _, v := range strings.Split(spec, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// parseUsers reads "email:password,email:password".
func parseUsers(spec string) (map[string]string, error) {
	users := make(map[string]string)
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		email, password, ok := strings.Cut(entry, ":")
		if !ok || email == "" || password == "" {
			return nil, fmt.Errorf("%q is not email:password", entry)
		}
		users[email] = password
	}
	if len(users) == 0 {
		return nil, errors.New("no users")
	}
	return users, nil
}

// flagSet reports whether name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// connectLogger writes one line per device-endpoint request, each in one
// write, so a reader of the file (a bench) sees whole lines even while
// the server runs, and none is lost when it is killed.
func connectLogger(w io.Writer) func(mockserver.ConnectEvent) {
	var mu sync.Mutex
	var buf []byte
	return func(e mockserver.ConnectEvent) {
		dev := e.Device
		if dev == "" {
			dev = "-"
		}
		mu.Lock()
		defer mu.Unlock()
		buf = strconv.AppendInt(buf[:0], e.At.UnixNano(), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, int64(e.Status), 10)
		buf = append(buf, ' ')
		buf = append(append(buf, dev...), '\n')
		_, _ = w.Write(buf)
	}
}
