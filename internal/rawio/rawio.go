// Package rawio reads and writes non-blocking descriptors with raw system
// calls, outside the Go runtime's syscall bookkeeping.
//
// An ordinary syscall.Read tells the scheduler it may block; when the
// runtime's monitor thread (sysmon) is parked because the process was idle,
// that notice wakes it, and the woken monitor then polls every 20 µs for a
// millisecond. A daemon that handles one keystroke every few hundred
// microseconds pays that on every key: measured on a 2-core VM, it was a
// quarter of the daemon's CPU per keystroke. A read or write on a
// non-blocking descriptor never blocks (it returns EAGAIN instead), so the
// notice is not needed; these functions skip it.
//
// Only for descriptors in non-blocking mode, and only for calls whose cost
// is bounded by the buffer given (a pipe, pty or socket read or write).
package rawio

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read reads into b from the non-blocking descriptor fd.
func Read(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Write writes b to the non-blocking descriptor fd; it may write less.
func Write(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Conn is a TCP connection whose reads and writes use Read and Write
// through the runtime's poller (so deadlines and readiness waits work as
// for any net.Conn); everything else is the *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
}

// NewConn wraps c.
func NewConn(c *net.TCPConn) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &Conn{TCPConn: c, rc: rc}, nil
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Read reads as net.Conn's Read does: io.EOF at the end of the stream.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, rerr = Read(fd, b)
		return rerr != syscall.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, c.opErr("read", err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b, waiting for room as net.Conn's Write does.
func (c *Conn) Write(b []byte) (int, error) {
	total := 0
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		for total < len(b) {
			n, err := Write(fd, b[total:])
			if err == syscall.EAGAIN {
				return false
			}
			if err != nil {
				werr = err
				return true
			}
			total += n
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return total, c.opErr("write", err)
	}
	return total, nil
}
