package filetransfer

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Identity is the account whose rights every file operation has.
type Identity struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
}

// do runs f with id's filesystem identity so that the kernel's own
// permission checks apply to every path f resolves, opens, creates,
// renames or removes. The identity is switched on one OS thread only
// (setfsuid, setfsgid and setgroups as raw per-thread system calls; the
// kernel drops CAP_DAC_OVERRIDE, CAP_FOWNER and friends from that thread
// with the fsuid), and that thread is never given back to the Go
// scheduler: the goroutine exits still locked, so the runtime ends the
// thread and no other goroutine can ever run with the switched rights,
// nor this one with root's. A nil id, or a daemon that is not root,
// runs f as the daemon itself (it cannot switch).
func (id *Identity) do(f func() error) error {
	if id == nil || os.Geteuid() != 0 {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread, on purpose (see above).
		if err := id.enter(); err != nil {
			errc <- err
			return
		}
		errc <- f()
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
