package handover

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// FDStore speaks to systemd's file-descriptor store over the notify
// socket ($NOTIFY_SOCKET). go-systemd's SdNotify cannot pass descriptors,
// hence this: a datagram with the state text and the descriptor as
// SCM_RIGHTS. The zero FDStore (no socket) does nothing.
type FDStore struct {
	socket string
}

// NewFDStore returns the store of the service the daemon runs as, or a
// zero one when there is none: no notify socket, or systemd says it keeps
// no descriptors ($FDSTORE=0, systemd 254 and later set it from
// FileDescriptorStoreMax=).
func NewFDStore() FDStore {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return FDStore{}
	}
	if v, ok := os.LookupEnv("FDSTORE"); ok {
		if n, err := strconv.Atoi(v); err != nil || n <= 0 {
			return FDStore{}
		}
	}
	return FDStore{socket: sock}
}

// Enabled says descriptors go to a store.
func (s FDStore) Enabled() bool { return s.socket != "" }

// Put stores f under name. systemd keeps a duplicate until the service
// stops (not across a restart), drops it by itself when the pty hangs up
// (the shell and everything on its terminal ended), and hands it back at
// the next start.
func (s FDStore) Put(name string, f syscall.Conn) error {
	if s.socket == "" {
		return nil
	}
	// Through the raw descriptor: File.Fd would put a pollable master
	// into blocking mode.
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("store descriptor %s: %w", name, err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = s.send("FDSTORE=1\nFDNAME="+name, int(fd)) }); err != nil {
		return fmt.Errorf("store descriptor %s: %w", name, err)
	}
	return serr
}

// Remove drops every descriptor stored under name.
func (s FDStore) Remove(name string) error {
	if s.socket == "" {
		return nil
	}
	return s.send("FDSTOREREMOVE=1\nFDNAME="+name, -1)
}

// send sends one notification datagram, with fd as SCM_RIGHTS when it is
// not -1.
func (s FDStore) send(state string, fd int) error {
	sa := &unix.SockaddrUnix{Name: s.socket} // "@..." is abstract
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	defer unix.Close(sock)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if err := unix.Sendmsg(sock, []byte(state), oob, sa, 0); err != nil {
		return fmt.Errorf("notify socket %s: %w", s.socket, err)
	}
	return nil
}
