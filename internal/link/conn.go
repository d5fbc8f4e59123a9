package link

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/rawio"
	"github.com/tether-agent/tether/internal/wire"
)

// notSentLowat bounds the bytes the kernel holds that have not been sent
// yet. Without it the send buffer grows to megabytes: one write can then
// block past any sensible timeout on a slow server, and a keystroke echo
// waits behind everything already in the socket. With it the fair writer,
// not the kernel, decides what goes next.
const notSentLowat = 16 << 10

// progressChunk is the most handed to the kernel in one write on a
// connection that cannot renew its deadline as it goes: each chunk gets a
// fresh deadline, so the write timeout means "no progress".
const progressChunk = 16 << 10

// dialTCP dials with a small unsent-bytes bound and the configured
// congestion control, and wraps the connection so that its write deadline
// counts from the last progress.
func dialTCP(writeTimeout time.Duration, congestion string, log *slog.Logger) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var warned atomic.Bool
	d := &net.Dialer{
		Timeout: 30 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			// Best effort: an old kernel without the option still works,
			// only with more latency behind bulk output.
			return c.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
				if congestion == "" {
					return
				}
				// A kernel without the module refuses it: the link works
				// with the default, said once, not on every redial.
				err := unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, congestion)
				if err != nil && log != nil && warned.CompareAndSwap(false, true) {
					log.Warn("Link.CongestionControl not available; using the kernel's default (see /proc/sys/net/ipv4/tcp_available_congestion_control)",
						"congestion_control", congestion, "error", err)
				}
			})
		},
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		pc := &progressConn{Conn: c, timeout: writeTimeout}
		if tc, ok := c.(*net.TCPConn); ok {
			if rc, err := rawio.NewConn(tc); err == nil {
				rc.SetWriteProgress(func() { _ = rc.SetWriteDeadline(pc.deadline()) })
				pc.Conn, pc.raw = rc, rc
			}
		}
		return pc, nil
	}
}

// progressConn fails a write only when no chunk of it got through for
// timeout (or an explicit, earlier deadline passed).
type progressConn struct {
	net.Conn
	timeout time.Duration
	// raw is Conn when it renews the deadline itself on progress: a
	// frame then goes out in one write instead of one per chunk.
	raw *rawio.Conn

	mu       sync.Mutex
	explicit time.Time // explicit write deadline; zero = none
}

func (c *progressConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.explicit = t
	c.mu.Unlock()
	return nil
}

func (c *progressConn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// deadline is the write deadline from now: timeout away, or the explicit
// deadline if that comes first.
func (c *progressConn) deadline() time.Time {
	var d time.Time
	if c.timeout > 0 {
		d = time.Now().Add(c.timeout)
	}
	c.mu.Lock()
	if !c.explicit.IsZero() && (d.IsZero() || c.explicit.Before(d)) {
		d = c.explicit
	}
	c.mu.Unlock()
	return d
}

func (c *progressConn) Write(b []byte) (int, error) {
	if c.raw != nil {
		if err := c.raw.SetWriteDeadline(c.deadline()); err != nil {
			return 0, err
		}
		n, err := c.raw.Write(b) // renews the deadline as it progresses
		if err != nil {
			return n, err
		}
		// A deadline left set arms a runtime timer that wakes the idle
		// daemon WriteTimeout after its last write, for nothing.
		return n, c.raw.SetWriteDeadline(time.Time{})
	}
	total := 0
	for len(b) > 0 {
		chunk := b
		if len(chunk) > progressChunk {
			chunk = chunk[:progressChunk]
		}
		d := c.deadline()
		if err := c.Conn.SetWriteDeadline(d); err != nil {
			return total, err
		}
		n, err := c.Conn.Write(chunk)
		total += n
		b = b[n:]
		if err != nil {
			return total, err
		}
	}
	// A deadline left set arms a runtime timer that wakes the idle
	// daemon WriteTimeout after its last write, for nothing.
	if err := c.Conn.SetWriteDeadline(time.Time{}); err != nil {
		return total, err
	}
	return total, nil
}

// traceMsg logs a frame's header at trace level: never its body, which may
// hold keystrokes, nor its properties' values.
func (l *Link) traceMsg(what string, m *wire.ProtoMsg, size int) {
	if !l.log.Enabled(context.Background(), logging.LevelTrace) {
		return
	}
	h := &m.Header
	l.log.Log(context.Background(), logging.LevelTrace, what, "proto", wire.ProtoName(h.Proto), "type", h.MsgType,
		"session_id", h.SessionID, "props", h.PropCount(), "body_bytes", len(m.Body), "frame_bytes", size)
}

// traceFrame decodes an outbound frame's header for the trace, only when
// tracing is on.
func (l *Link) traceFrame(what string, f []byte) {
	if !l.log.Enabled(context.Background(), logging.LevelTrace) {
		return
	}
	m, err := wire.Unmarshal(f)
	if err != nil {
		l.log.Log(context.Background(), logging.LevelTrace, what, "frame_bytes", len(f), "error", err)
		return
	}
	l.traceMsg(what, m, len(f))
}
