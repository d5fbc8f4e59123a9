//go:build linux && (386 || arm)

package identity

import "golang.org/x/sys/unix"

// On 386 and 32-bit arm the plain setgroups, setfsuid and setfsgid are the
// old 16-bit calls: they would read the []uint32 group list as pairs of
// 16-bit ids and truncate ids above 65535. The 32-bit calls are these.
const (
	sysSetgroups = unix.SYS_SETGROUPS32
	sysSetfsuid  = unix.SYS_SETFSUID32
	sysSetfsgid  = unix.SYS_SETFSGID32
)
