//go:build amd64 || 386 || arm || mips || mipsle || riscv64

package utmp

// native is this architecture's struct utmp.
var native = &layout384
