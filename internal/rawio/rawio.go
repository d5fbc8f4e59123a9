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
	"sync"
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

	// The callbacks handed to the poller are made once: a closure per
	// call would be two allocations per frame. Their arguments and
	// results live here, under a mutex per direction.
	rmu    sync.Mutex
	rb     []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool

	wmu      sync.Mutex
	wb       []byte
	wn       int
	wmark    int // wn when progress was last reported
	werr     error
	writeFn  func(uintptr) bool
	progress func()
}

// SetWriteProgress makes Write call f (with the write in progress, so f
// must not write) each time it has to wait for room after having written
// something since it last waited or began: a caller can then renew its
// write deadline, so that the deadline means "no progress for so long"
// however big the write. Set it before the first Write.
func (c *Conn) SetWriteProgress(f func()) { c.progress = f }

// NewConn wraps c.
func NewConn(c *net.TCPConn) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	conn := &Conn{TCPConn: c, rc: rc}
	conn.readFn, conn.writeFn = conn.read, conn.write
	return conn, nil
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func (c *Conn) read(fd uintptr) bool {
	c.rn, c.rerr = Read(fd, c.rb)
	return c.rerr != syscall.EAGAIN
}

// Read reads as net.Conn's Read does: io.EOF at the end of the stream.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rb, c.rn, c.rerr = b, 0, nil
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rb = nil
	c.rmu.Unlock()
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

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wb) {
		n, err := Write(fd, c.wb[c.wn:])
		if err == syscall.EAGAIN {
			if c.wn > c.wmark && c.progress != nil {
				c.wmark = c.wn
				c.progress()
			}
			return false
		}
		if err != nil {
			c.werr = err
			return true
		}
		c.wn += n
	}
	return true
}

// Write writes all of b, waiting for room as net.Conn's Write does.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	c.wb, c.wn, c.wmark, c.werr = b, 0, 0, nil
	err := c.rc.Write(c.writeFn)
	total, werr := c.wn, c.werr
	c.wb = nil
	c.wmu.Unlock()
	if err == nil {
		err = werr
	}
	if err != nil {
		return total, c.opErr("write", err)
	}
	return total, nil
}
