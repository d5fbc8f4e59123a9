package auth_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/mockauth"
	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

// fastOpts keep retries short so that tests run in seconds.
func fastOpts(addr string) auth.DBusOptions {
	return auth.DBusOptions{
		Address:            addr,
		CallTimeout:        2 * time.Second,
		RetryMin:           20 * time.Millisecond,
		RetryMax:           100 * time.Millisecond,
		RefreshMinInterval: 300 * time.Millisecond,
	}
}

func startMock(t *testing.T, addr string, opts mockauth.Options) *mockauth.Service {
	t.Helper()
	svc, err := mockauth.New(discardLogger(t), dial(t, addr), opts)
	if err != nil {
		t.Fatalf("mockauth.New: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

func discardLogger(t *testing.T) *slog.Logger {
	log, _ := newLogger(t)
	return log.With("component", "mockauth")
}

var (
	credsA = auth.Credentials{Token: secretPrefix + "a", ServerURL: "https://a.example"}
	credsB = auth.Credentials{Token: secretPrefix + "b", ServerURL: "https://b.example"}
	none   = auth.Credentials{}
)

func TestDBusGetAtStart(t *testing.T) {
	addr := dbustest.Start(t)
	startMock(t, addr, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	log, _ := newLogger(t)
	src := auth.NewDBus(log, fastOpts(addr))
	runSource(t, src)
	expectNext(t, src, credsA)
	// The service's own announcement at start is not delivered twice.
	expectNone(t, src, 200*time.Millisecond)
}

func TestDBusServiceAppearsLater(t *testing.T) {
	addr := dbustest.Start(t)
	log, logs := newLogger(t)
	src := auth.NewDBus(log, fastOpts(addr))
	runSource(t, src)

	// Unauthorised is delivered at once, and said once.
	expectNext(t, src, none)
	time.Sleep(100 * time.Millisecond)
	if n := logs.count("is not on the bus"); n != 1 {
		t.Fatalf("'not on the bus' logged %d times, want 1", n)
	}

	// A provider that never emits a signal: the client must ask by itself
	// as soon as the name gets an owner.
	svc := newRawService(t, addr, credsA.Token, credsA.ServerURL)
	svc.own(t)
	start := time.Now() // RequestName has been answered
	got := next(t, src, 5*time.Second)
	elapsed := time.Since(start)
	if got != credsA {
		t.Fatalf("update %v, want %v", got, credsA)
	}
	if elapsed > 100*time.Millisecond {
		t.Fatalf("credentials delivered %v after the service appeared, want < 100ms", elapsed)
	}
	t.Logf("delivered %v after RequestName returned", elapsed)
}

func TestDBusRotateClearSet(t *testing.T) {
	addr := dbustest.Start(t)
	svc := startMock(t, addr, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	log, _ := newLogger(t)
	src := auth.NewDBus(log, fastOpts(addr))
	runSource(t, src)
	expectNext(t, src, credsA)

	if err := svc.Rotate(context.Background()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	rotated := next(t, src, 5*time.Second)
	if !rotated.Authorized() || rotated == credsA || rotated.ServerURL != credsA.ServerURL {
		t.Fatalf("after rotation %v, want a new token for %s", rotated, credsA.ServerURL)
	}

	svc.Clear()
	got := next(t, src, 5*time.Second)
	if got != none || got.Authorized() {
		t.Fatalf("after Clear %v, want empty", got)
	}

	svc.Set(credsB.Token, credsB.ServerURL)
	expectNext(t, src, credsB)
	// The same value announced again is not delivered again.
	svc.Set(credsB.Token, credsB.ServerURL)
	expectNone(t, src, 200*time.Millisecond)
}

func TestDBusNewestWins(t *testing.T) {
	addr := dbustest.Start(t)
	svcConn := dial(t, addr)
	svc, err := mockauth.New(discardLogger(t), svcConn, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	if err != nil {
		t.Fatalf("mockauth.New: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	log, logs := newLogger(t)
	src := auth.NewDBus(log, fastOpts(addr))
	runSource(t, src)
	expectNext(t, src, credsA)

	// handled returns once the source has handled every signal the
	// service sent so far: a round trip on the service's connection puts
	// them on the bus, and a signal from another sender routed after them
	// is logged (and ignored) by the source only after it handled them.
	impostor := dial(t, addr)
	marks := 0
	handled := func() {
		t.Helper()
		var id string
		if err := svcConn.BusObject().Call("org.freedesktop.DBus.GetId", 0).Store(&id); err != nil {
			t.Fatalf("GetId: %v", err)
		}
		if err := impostor.Emit(auth.ObjectPath, auth.SignalJwtTokenStateChange, "", ""); err != nil {
			t.Fatalf("marker Emit: %v", err)
		}
		marks++
		eventually(t, 5*time.Second, "the source handled the signals", func() bool {
			return logs.count("not sent by the owner") >= marks
		})
	}

	// The upstream bug: "empty → new token" quickly, with a slow consumer,
	// left the daemon unauthorised. Here the consumer reads only after
	// both, and must see the new token, and only that.
	svc.Clear()
	svc.Set(credsB.Token, credsB.ServerURL)
	handled()
	expectNext(t, src, credsB)
	expectNone(t, src, 100*time.Millisecond)

	// A longer burst ends the same way.
	for i := 0; i < 20; i++ {
		svc.Clear()
		svc.Set(credsA.Token, credsA.ServerURL)
	}
	svc.Clear()
	handled()
	expectNext(t, src, none)
	expectNone(t, src, 100*time.Millisecond)
}

func TestDBusIgnoresSignalsFromNonOwner(t *testing.T) {
	addr := dbustest.Start(t)
	svc := startMock(t, addr, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	log, logs := newLogger(t)
	src := auth.NewDBus(log, fastOpts(addr))
	runSource(t, src)
	expectNext(t, src, credsA)

	impostor := dial(t, addr)
	evil := secretPrefix + "evil"
	if err := impostor.Emit(auth.ObjectPath, auth.SignalJwtTokenStateChange, evil, "https://evil.example"); err != nil {
		t.Fatalf("impostor Emit: %v", err)
	}
	// Also a forged NameOwnerChanged sent straight to the client would
	// need its unique name; a broadcast one is not from the bus driver.
	if err := impostor.Emit("/org/freedesktop/DBus", "org.freedesktop.DBus.NameOwnerChanged",
		auth.BusName, "", impostor.Names()[0]); err != nil {
		t.Fatalf("impostor Emit NameOwnerChanged: %v", err)
	}
	if err := impostor.Emit(auth.ObjectPath, auth.SignalJwtTokenStateChange, evil, "https://evil.example"); err != nil {
		t.Fatalf("impostor Emit: %v", err)
	}
	// A round trip to the bus guarantees the bus has routed the impostor's
	// signals before the real service's next one.
	var id string
	if err := impostor.BusObject().Call("org.freedesktop.DBus.GetId", 0).Store(&id); err != nil {
		t.Fatalf("GetId: %v", err)
	}
	svc.Set(credsB.Token, credsB.ServerURL)
	expectNext(t, src, credsB)
	expectNone(t, src, 100*time.Millisecond)
	if logs.count("not sent by the owner") == 0 {
		t.Fatal("the impostor's signals were not even seen; the test proves nothing")
	}
}

func TestDBusRefreshIsRateLimited(t *testing.T) {
	addr := dbustest.Start(t)
	svc := startMock(t, addr, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	log, logs := newLogger(t)
	opts := fastOpts(addr)
	opts.RefreshMinInterval = 500 * time.Millisecond
	src := auth.NewDBus(log, opts)
	runSource(t, src)
	expectNext(t, src, credsA)

	src.Refresh()
	eventually(t, 10*time.Second, "the first FetchJwtToken", func() bool { return svc.FetchCount() == 1 })
	// Requests within the interval are merged into one call, made when the
	// interval is over: the calls' own log times show the spacing.
	for i := 0; i < 4; i++ {
		src.Refresh()
	}
	eventually(t, 10*time.Second, "the deferred FetchJwtToken", func() bool { return svc.FetchCount() == 2 })
	times := logTimes(t, logs, "asking the auth service for a new token")
	if len(times) != 2 {
		t.Fatalf("%d FetchJwtToken calls logged, want 2", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < opts.RefreshMinInterval {
		t.Fatalf("second FetchJwtToken %v after the first, want >= %v", gap, opts.RefreshMinInterval)
	}
	// Nothing else was pending: no third call in the next interval (a
	// window the assertion must span, not a synchronisation).
	window := time.Now().Add(opts.RefreshMinInterval + 200*time.Millisecond)
	for time.Now().Before(window) {
		if n := svc.FetchCount(); n != 2 {
			t.Fatalf("FetchJwtToken called %d times, want 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Re-authentication announced the same token: nothing new to deliver.
	expectNone(t, src, 50*time.Millisecond)

	// After a failed re-authentication the token is gone, and a later
	// refresh brings it back.
	svc.SetFetchFailure(mockauth.FetchAuthFails)
	src.Refresh() // rate-limited: made when the interval is over
	expectNext(t, src, none)
	svc.SetFetchFailure(mockauth.FetchWorks)
	src.Refresh()
	expectNext(t, src, credsA)
}

func TestDBusServiceLeavesAndReturns(t *testing.T) {
	addr := dbustest.Start(t)
	svc, err := mockauth.New(discardLogger(t), dial(t, addr), mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger(t)
	src := auth.NewDBus(log, fastOpts(addr))
	runSource(t, src)
	expectNext(t, src, credsA)

	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	// Credentials are kept while the service is away, like upstream.
	expectNone(t, src, 200*time.Millisecond)
	if logs.count("keeping the last credentials") != 1 {
		t.Fatal("the service's departure was not logged")
	}
	startMock(t, addr, mockauth.Options{Token: credsB.Token, ServerURL: credsB.ServerURL})
	expectNext(t, src, credsB)
}

func TestDBusBusAbsentThenAppears(t *testing.T) {
	sock := filepath.Join(dbustest.ShortTempDir(t), "bus")
	log, logs := newLogger(t)
	src := auth.NewDBus(log, fastOpts(dbustest.SocketAddress(sock)))
	runSource(t, src)

	expectNext(t, src, none) // unauthorised, known at once
	time.Sleep(500 * time.Millisecond)
	if n := logs.count("D-Bus unavailable"); n != 1 {
		t.Fatalf("'D-Bus unavailable' logged %d times while retrying, want 1", n)
	}

	bus := dbustest.StartBus(t, dbustest.Options{SocketPath: sock})
	startMock(t, bus.Address, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	expectNext(t, src, credsA)
	if logs.count("D-Bus connection established") != 1 {
		t.Fatal("recovery was not logged")
	}
}

func TestDBusBusDiesAndComesBack(t *testing.T) {
	sock := filepath.Join(dbustest.ShortTempDir(t), "bus")
	bus := dbustest.StartBus(t, dbustest.Options{SocketPath: sock})
	startMock(t, bus.Address, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	log, logs := newLogger(t)
	src := auth.NewDBus(log, fastOpts(bus.Address))
	runSource(t, src)
	expectNext(t, src, credsA)

	bus.Stop()
	// The last credentials are kept while the bus is away.
	expectNone(t, src, 400*time.Millisecond)
	if n := logs.count("D-Bus unavailable"); n != 1 {
		t.Fatalf("'D-Bus unavailable' logged %d times, want 1", n)
	}

	bus2 := dbustest.StartBus(t, dbustest.Options{SocketPath: sock})
	svc := startMock(t, bus2.Address, mockauth.Options{Token: credsB.Token, ServerURL: credsB.ServerURL})
	expectNext(t, src, credsB)

	// Subscriptions were renewed on the new connection.
	svc.Set(credsA.Token, credsA.ServerURL)
	expectNext(t, src, credsA)
}

func TestDBusRefreshWhileBusAwayIsServedLater(t *testing.T) {
	sock := filepath.Join(dbustest.ShortTempDir(t), "bus")
	log, _ := newLogger(t)
	src := auth.NewDBus(log, fastOpts(dbustest.SocketAddress(sock)))
	runSource(t, src)
	expectNext(t, src, none)
	src.Refresh()

	bus := dbustest.StartBus(t, dbustest.Options{SocketPath: sock})
	svc := startMock(t, bus.Address, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	expectNext(t, src, credsA)
	eventually(t, 10*time.Second, "FetchJwtToken after the bus appeared", func() bool { return svc.FetchCount() == 1 })
}

func TestDBusRefreshWaitsForService(t *testing.T) {
	addr := dbustest.Start(t)
	log, _ := newLogger(t)
	opts := fastOpts(addr)
	opts.RefreshMinInterval = 100 * time.Millisecond
	src := auth.NewDBus(log, opts)
	runSource(t, src)
	expectNext(t, src, none)
	src.Refresh() // no service: FetchJwtToken fails
	time.Sleep(2 * opts.RefreshMinInterval)

	svc := startMock(t, addr, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	expectNext(t, src, credsA)
	eventually(t, 10*time.Second, "the refresh to reach the service", func() bool { return svc.FetchCount() == 1 })
	time.Sleep(2 * opts.RefreshMinInterval)
	if n := svc.FetchCount(); n != 1 {
		t.Fatalf("FetchJwtToken called %d times, want 1", n)
	}
}

func TestDBusNoGoroutineLeak(t *testing.T) {
	addr := dbustest.Start(t)
	svc := startMock(t, addr, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	check := goroutineBaseline(t)

	log, _ := newLogger(t)
	src := auth.NewDBus(log, fastOpts(addr))
	stop := runSource(t, src)
	expectNext(t, src, credsA)
	src.Refresh()
	src.Refresh() // leaves a deferred refresh timer armed
	svc.Clear()
	expectNext(t, src, none)
	stop()
	check()
}

func TestDBusNoGoroutineLeakWhileBusAbsent(t *testing.T) {
	sock := filepath.Join(dbustest.ShortTempDir(t), "bus")
	check := goroutineBaseline(t)
	log, _ := newLogger(t)
	src := auth.NewDBus(log, fastOpts(dbustest.SocketAddress(sock)))
	stop := runSource(t, src)
	expectNext(t, src, none)
	stop()
	check()
}

func TestDBusRunTwice(t *testing.T) {
	log, _ := newLogger(t)
	src := auth.NewDBus(log, fastOpts("unix:path=/nonexistent/bus"))
	runSource(t, src)
	expectNext(t, src, none) // the first Run is under way
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := src.Run(ctx); err == nil {
		t.Fatal("second Run returned nil, want an error")
	}
}

func TestDBusSystemBusFromEnvironment(t *testing.T) {
	addr := dbustest.Start(t)
	startMock(t, addr, mockauth.Options{Token: credsA.Token, ServerURL: credsA.ServerURL})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
	log, _ := newLogger(t)
	opts := fastOpts("")
	src := auth.NewDBus(log, opts)
	runSource(t, src)
	expectNext(t, src, credsA)
}
