//go:build linux && !(386 || arm)

package identity

import "golang.org/x/sys/unix"

// Everywhere else the plain calls take 32-bit ids.
const (
	sysSetgroups = unix.SYS_SETGROUPS
	sysSetfsuid  = unix.SYS_SETFSUID
	sysSetfsgid  = unix.SYS_SETFSGID
)
