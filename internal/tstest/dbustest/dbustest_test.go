package dbustest

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func connect(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestStartOpenPolicy(t *testing.T) {
	addr := Start(t)
	if !strings.HasPrefix(addr, "unix:path=") {
		t.Fatalf("address %q is not a unix path address", addr)
	}
	conn := connect(t, addr)
	reply, err := conn.RequestName("io.example.Test", dbus.NameFlagDoNotQueue)
	if err != nil {
		t.Fatalf("RequestName: %v", err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName reply = %v, want primary owner", reply)
	}
}

func TestSystemPolicyDeniesOwnership(t *testing.T) {
	addr := StartWithConfig(t, SystemPolicy)
	conn := connect(t, addr)
	_, err := conn.RequestName("io.example.Test", dbus.NameFlagDoNotQueue)
	if err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("RequestName under SystemPolicy: err = %v, want access denied", err)
	}
}

func TestStopDropsClientsAndRestartAtSamePath(t *testing.T) {
	sock := filepath.Join(ShortTempDir(t), "bus")
	b := StartBus(t, Options{SocketPath: sock})
	conn := connect(t, b.Address)
	b.Stop()
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client connection still open 5s after the bus was stopped")
	}
	if _, err := dbus.Connect(SocketAddress(sock)); err == nil {
		t.Fatal("connecting to a stopped bus succeeded")
	}

	b2 := StartBus(t, Options{SocketPath: sock})
	if b2.SocketPath != sock {
		t.Fatalf("socket path %q, want %q", b2.SocketPath, sock)
	}
	conn2 := connect(t, SocketAddress(sock))
	var names []string
	if err := conn2.BusObject().Call("org.freedesktop.DBus.ListNames", 0).Store(&names); err != nil {
		t.Fatalf("ListNames on restarted bus: %v", err)
	}
}
