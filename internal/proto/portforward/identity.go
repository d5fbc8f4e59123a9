package portforward

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Identity is the account whose sockets forwarded connections are.
type Identity struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
}

// do runs f on an OS thread whose filesystem identity and groups are the
// account's. The kernel takes a socket's owner (what /proc/net/tcp shows
// and owner-matching firewall rules compare) from the creating thread's
// fsuid and fsgid, and its file credentials, groups included, from that
// thread's credentials, so the socket f creates is the account's. The
// switch is made with raw per-thread system calls (the libc-style
// wrappers would switch every thread of the daemon), and the thread is
// never given back to the scheduler: the goroutine exits locked, so the
// runtime ends the thread and nothing else ever runs with its
// credentials. f must create its socket on the calling goroutine. A nil
// id, the root account or a daemon that is not root runs f as is.
//
// File transfer switches the same way (its own copy: the two protocols
// can be built without each other).
func (id *Identity) do(f func()) error {
	if id == nil || id.UID == 0 || os.Geteuid() != 0 {
		f()
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread, on purpose (see above).
		if err := id.enter(); err != nil {
			errc <- err
			return
		}
		f()
		errc <- nil
	}()
	return <-errc
}

func (id *Identity) enter() error {
	var p unsafe.Pointer
	groups := make([]uint32, len(id.Groups))
	copy(groups, id.Groups)
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(sysSetgroups, uintptr(len(groups)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("switch to user %s: setgroups: %w", id.Name, e)
	}
	runtime.KeepAlive(groups)
	unix.RawSyscall(sysSetfsgid, uintptr(id.GID), 0, 0)
	unix.RawSyscall(sysSetfsuid, uintptr(id.UID), 0, 0)
	// Both calls return the previous value and never fail loudly: an
	// invalid id (-1) reads the current one back for the check.
	cur, _, _ := unix.RawSyscall(sysSetfsgid, ^uintptr(0), 0, 0)
	if uint32(cur) != id.GID {
		return fmt.Errorf("switch to user %s: setfsgid(%d) did not take", id.Name, id.GID)
	}
	cur, _, _ = unix.RawSyscall(sysSetfsuid, ^uintptr(0), 0, 0)
	if uint32(cur) != id.UID {
		return fmt.Errorf("switch to user %s: setfsuid(%d) did not take", id.Name, id.UID)
	}
	return nil
}
