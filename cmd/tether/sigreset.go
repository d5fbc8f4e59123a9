package main

import (
	"os/signal"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resetInheritedIgnores gives the real-time signals back their default
// action when the daemon was started with them ignored. Go installs its
// own handlers for the classic signals (so an exec'd shell gets their
// defaults back), and stopContext handles SIGHUP and SIGINT, but Go leaves
// glibc's reserved signal 32 and the real-time ones alone when it does not
// use them, so an "ignore" inherited from the supervisor (GNU make, for
// one, ignores 32 and 33 in what it runs) would pass to every shell.
// Nothing in the daemon uses these signals.
func resetInheritedIgnores() {
	for s := syscall.Signal(32); s <= 64; s++ {
		if signal.Ignored(s) {
			setDefault(s)
		}
	}
}

// setDefault sets s to SIG_DFL. An all-zero struct sigaction is SIG_DFL
// with no flags and an empty mask whatever the architecture's layout, so
// a zeroed buffer larger than any layout serves everywhere.
func setDefault(s syscall.Signal) {
	var act [64]byte
	sigsetSize := uintptr(8)
	if runtime.GOARCH == "mips" || runtime.GOARCH == "mipsle" || runtime.GOARCH == "mips64" || runtime.GOARCH == "mips64le" {
		sigsetSize = 16 // 128 signals there
	}
	_, _, _ = unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&act[0])), 0, sigsetSize, 0, 0)
}
