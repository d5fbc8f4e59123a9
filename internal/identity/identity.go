// Package identity runs work with a configured account's rights inside
// the root daemon: file transfer's lookups, opens and writes and port
// forwarding's sockets. The account's supplementary groups, filesystem
// uid and gid are set on one OS thread only, its capabilities dropped, and
// that thread ends with the work, so the kernel's own checks (permissions,
// quotas, reserved blocks, a socket's owner for firewall rules) apply to
// what a remote user asks for, and nothing else in the daemon ever runs
// with the switched identity.
package identity

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Identity is the account whose rights remote users' work has.
type Identity struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
}

// Do runs f with id's identity so that the kernel's own permission
// checks, quotas and reserved-block limits apply to every path f resolves,
// every file it opens, creates, writes, renames or removes and every
// socket it creates (its owner is the account). f must do its work on the
// calling goroutine. The
// identity is switched on one OS thread only (setgroups, setfsgid and
// setfsuid as raw per-thread system calls, then capset clears all the
// thread's capabilities, CAP_SYS_RESOURCE included; see enter), and that
// thread is never given back to the Go scheduler: the goroutine exits still
// locked, so the runtime ends the thread and no other goroutine can ever
// run with the switched identity, nor this one with root's. A nil id, or
// a daemon that is not root, runs f as the daemon itself (it cannot
// switch).
func (id *Identity) Do(f func() error) error {
	if id == nil || os.Geteuid() != 0 {
		return f()
	}
	errc := make(chan error, 1)
	goLocked(func() {
		// No UnlockOSThread, on purpose (see above).
		if err := id.enter(); err != nil {
			errc <- err
			return
		}
		errc <- f()
	})
	return <-errc
}

// goLocked runs body on a new goroutine locked to an OS thread other than
// the process's main thread, and returns once that goroutine holds its
// thread. The main thread must never be switched: the runtime cannot end
// it, so it would stay the user's for good, and the kernel takes the
// process's ids from it for kill(2)'s permission check and for ps (a
// switched main thread would let the account signal the daemon). The
// daemon keeps its main goroutine on the main thread anyway; this makes
// the package safe without that.
func goLocked(body func()) {
	held := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// While this goroutine holds the main thread, the next one
			// cannot be given it.
			goLocked(body)
			runtime.UnlockOSThread()
			close(held)
			return
		}
		close(held)
		body()
	}()
	<-held
}

// FSUID is the owner of the files and sockets created on id's threads.
func (id *Identity) FSUID() uint32 {
	if id == nil || os.Geteuid() != 0 {
		return uint32(os.Geteuid())
	}
	return id.UID
}

// Thread is an OS thread switched to an identity and held for a series
// of operations (an upload's lifetime): Do hands it work, Close ends it.
// A nil Thread runs the work on the caller's thread.
//
// Why hold one rather than switch per operation: a switch is a new OS
// thread (clone, setgroups, setfsgid, setfsuid, capset, the thread's
// exit), measured at 80–160 µs of CPU, against 17–65 µs to hand work to
// a thread already switched and 2–3 µs for a 4 KiB write itself
// (BenchmarkIdentity, amd64, a busy 2-core machine). A switch per 4 KiB
// chunk would cost 40–60 times the write, and even handing the held
// thread each ack window (10 chunks) cost +50% CPU per MiB uploaded
// (5.6–5.9 ms against 3.7–4.1 ms when root wrote; BenchmarkUploadAsAccount).
// So an upload runs whole on its thread (3.5–3.6 ms/MiB): Do called
// there runs inline, and the few steps that need the daemon's own rights
// (its journal, the directory fsync) go to another goroutine (AsRoot).
// Holding the thread costs one parked OS thread per running upload,
// which the transfer's end (complete, failed, aborted, peer silent for
// the ack timeout, session closed) gives back. No switched thread
// outlives its upload: a pool kept across transfers would hold threads
// for ever on a device idle most of the time.
type Thread struct {
	ops chan func()
	res chan error
	tid int // the OS thread's id
}

// Start switches a new OS thread to id for a series of operations.
func (id *Identity) Start() (*Thread, error) {
	if id == nil || os.Geteuid() != 0 {
		return nil, nil
	}
	t := &Thread{ops: make(chan func()), res: make(chan error, 1)}
	goLocked(func() {
		// No UnlockOSThread: the thread ends with the goroutine (see Do).
		if err := id.enter(); err != nil {
			t.res <- err
			return
		}
		t.tid = unix.Gettid()
		t.res <- nil
		for f := range t.ops {
			f()
		}
	})
	if err := <-t.res; err != nil {
		return nil, err
	}
	return t, nil
}

// Do runs f on the switched thread; calls must not overlap. Called on
// the thread itself, it just runs f.
func (t *Thread) Do(f func() error) error {
	if t == nil || unix.Gettid() == t.tid {
		return f()
	}
	t.ops <- func() { t.res <- f() }
	return <-t.res
}

// AsRoot runs f with the daemon's own rights: on another goroutine if
// called on the switched thread (a new goroutine cannot run on a thread
// locked to another), else right away.
func (t *Thread) AsRoot(f func()) {
	if t == nil || unix.Gettid() != t.tid {
		f()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// Close ends the thread; it must not be used afterwards.
func (t *Thread) Close() {
	if t != nil {
		close(t.ops)
	}
}

// enter switches the calling (locked) thread to id: supplementary groups
// and the filesystem gid and uid, which are what the kernel checks for
// every file access and what it gives a new file or socket; then it
// clears the thread's capabilities, which the fsuid switch leaves mostly
// in place (CAP_SYS_RESOURCE would let the account's writes into the
// blocks ext4 reserves for root and past its quota). The real, effective
// and saved uids stay root's on purpose: kill(2) lets a sender signal a
// thread whose real or saved uid is its own, and a SIGKILL or SIGSTOP
// sent to one thread takes the whole daemon, so with setresuid any
// process of the account (its remote shells) could stop the daemon
// during an upload. An account with uid 0 is root and keeps root's
// capabilities.
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
	if cur, _, _ := unix.RawSyscall(sysSetfsgid, ^uintptr(0), 0, 0); uint32(cur) != id.GID {
		return fmt.Errorf("switch to user %s: setfsgid(%d) did not take", id.Name, id.GID)
	}
	if cur, _, _ := unix.RawSyscall(sysSetfsuid, ^uintptr(0), 0, 0); uint32(cur) != id.UID {
		return fmt.Errorf("switch to user %s: setfsuid(%d) did not take", id.Name, id.UID)
	}
	if id.UID != 0 {
		// Effective, permitted and inheritable (and so ambient) sets
		// emptied: nothing on this thread can raise one again.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return fmt.Errorf("switch to user %s: drop capabilities: %w", id.Name, err)
		}
	}
	return nil
}
