package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/tether-agent/tether/internal/mockserver"
)

// portMapping is one [tcp|udp/]LOCAL[:[HOST:]REMOTE] argument, as
// mender-cli reads it.
type portMapping struct {
	network    string
	local      uint16
	remoteHost string
	remote     uint16
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port number: %s", s)
	}
	return uint16(n), nil
}

func parseMapping(arg string) (portMapping, error) {
	m := portMapping{network: "tcp", remoteHost: "127.0.0.1"}
	if p, rest, ok := strings.Cut(arg, "/"); ok {
		if p != "tcp" && p != "udp" {
			return m, errors.New("unknown protocol: " + p)
		}
		m.network, arg = p, rest
	}
	parts := strings.SplitN(arg, ":", 3)
	var err error
	switch len(parts) {
	case 1:
		if m.local, err = parsePort(parts[0]); err != nil {
			return m, err
		}
		m.remote = m.local
		return m, nil
	case 3:
		m.remoteHost = strings.Trim(parts[1], "[]")
		parts = []string{parts[0], parts[2]}
	}
	if m.local, err = parsePort(parts[0]); err != nil {
		return m, err
	}
	if m.remote, err = parsePort(parts[1]); err != nil {
		return m, err
	}
	return m, nil
}

func portForward(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mock-mender port-forward", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mock-mender port-forward [flags] DEVICE_ID [tcp|udp/]LOCAL_PORT[:[REMOTE_HOST:]REMOTE_PORT]...\n\n"+
			"Forwards local ports to the device's side like mender-cli port-forward; runs until interrupted.\n\nflags:")
		fs.PrintDefaults()
	}
	var cf clientFlags
	cf.register(fs)
	bind := fs.String("bind", "127.0.0.1", "binding host")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return errors.New("want a device id and at least one port mapping")
	}
	var maps []portMapping
	for _, a := range fs.Args()[1:] {
		m, err := parseMapping(a)
		if err != nil {
			return err
		}
		maps = append(maps, m)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tok, err := mockserver.Login(ctx, cf.server, cf.user, cf.password)
	if err != nil {
		return err
	}
	deviceID := fs.Arg(0)
	if st, err := mockserver.DeviceStatus(ctx, cf.server, tok, deviceID); err != nil {
		return fmt.Errorf("unable to get the device: %w", err)
	} else if st != "connected" {
		return errors.New("the device is not connected")
	}
	pf, err := mockserver.OpenPortForward(ctx, cf.server, tok, deviceID, func(f string, a ...any) {
		fmt.Fprintf(stdout, f+"\n", a...)
	})
	if err != nil {
		return err
	}
	defer pf.Close()
	for _, m := range maps {
		addr := net.JoinHostPort(*bind, strconv.Itoa(int(m.local)))
		if m.network == "udp" {
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return err
			}
			pc, err := net.ListenUDP("udp", ua)
			if err != nil {
				return err
			}
			if err := pf.ServeUDP(pc, m.remoteHost, m.remote); err != nil {
				pc.Close()
				return err
			}
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		pf.ServeTCP(l, m.remoteHost, m.remote)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-pf.Done():
		return errors.New("connection to the server ended")
	}
}
