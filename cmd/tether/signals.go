package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// stopContext ends with SIGTERM or SIGINT, and with SIGHUP unless the
// daemon was started with SIGHUP ignored. Either way the daemon handles
// SIGHUP, so the shells it starts get the default disposition back at exec:
// an inherited "ignore" would otherwise pass to every shell, and the HUP
// step of a session's teardown would do nothing. Without this, a HUP that
// was not ignored would kill the daemon without hanging up its shells.
func stopContext(log *slog.Logger) (context.Context, context.CancelFunc) {
	stopOn := []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	hupIgnored := signal.Ignored(syscall.SIGHUP)
	if !hupIgnored {
		stopOn = append(stopOn, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), stopOn...)
	if !hupIgnored {
		return ctx, stop
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP ignored: the daemon was started with SIGHUP ignored (there is no reload)")
			}
		}
	}()
	return ctx, func() {
		signal.Stop(hup)
		stop()
		<-done
	}
}
