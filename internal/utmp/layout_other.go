//go:build !(amd64 || 386 || arm || mips || mipsle || riscv64 || arm64)

package utmp

// native is nil: struct utmp's layout on this architecture has not been
// checked against its C library, and a wrong guess would corrupt the
// file every login tool reads. No records are written here.
var native *layout
