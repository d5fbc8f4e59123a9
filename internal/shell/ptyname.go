package shell

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// PtyName is the terminal's name relative to /dev ("pts/3"), read from
// the master (TIOCGPTN), for login records; "" if the kernel will not say.
func (p *Process) PtyName() string {
	var n uint32
	var ierr error
	if err := p.raw.Control(func(fd uintptr) {
		n, ierr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
	}); err != nil || ierr != nil {
		return ""
	}
	return "pts/" + strconv.FormatUint(uint64(n), 10)
}
