// Package terminal is the shell protocol (proto 1, docs/protocol.md §4): a
// peer's "new" starts a login shell on a pty as the configured user,
// "shell" carries keystrokes and output, "resize" sets the terminal size,
// "stop" ends the session, and ping/pong check the peer's health.
//
// Its sessions count against the device's session limits, so the router
// (internal/session) admits them, expires them and stops them on token
// loss or shutdown; every session here owns its pty, process and queue.
// Nothing here blocks the link's read loop.
package terminal

import (
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/tether-agent/tether/internal/shell"
	"github.com/tether-agent/tether/internal/utmp"
	"github.com/tether-agent/tether/internal/wire"
)

// Upstream's reply texts (docs/protocol.md §4.1); peers and people match them.
const (
	msgShellStarted   = "Shell started"
	msgTooManyShells  = "too many shells spawned"
	msgTooManyForUser = "user has too many open sessions"
	msgAlreadyRunning = "failed to start shell: shell is already running"
	msgNoSession      = "session not found"
)

// Recorder is told what happens, for metrics.
type Recorder interface {
	SessionOpened(proto string)
	SessionClosed(proto, reason string, d time.Duration)
	TerminalBytesIn(n int)
	TerminalBytesOut(n int)
}

// Options configure the terminal.
type Options struct {
	Log *slog.Logger

	ShellCommand string
	ShellArgs    []string
	Account      *shell.Account
	Lang         string
	DefaultCols  uint16
	DefaultRows  uint16

	StopGrace    time.Duration
	PingInterval time.Duration
	PongTimeout  time.Duration

	// ReadBuffer is the pty read size; a busy shell fills it by itself.
	ReadBuffer int
	// ReplayBuffer is how much of a session's latest output it keeps for
	// a user who reattaches (0: none).
	ReplayBuffer int
	// IdleCountsOutput makes shell output count as activity for idle
	// expiry, as input always does.
	IdleCountsOutput bool
	// Reaper starts and reaps the shells (and the orphans it adopts).
	Reaper *shell.Reaper
	// LoginRecords writes each shell's utmp and wtmp entries; nil
	// writes none.
	LoginRecords *utmp.Recorder

	Recorder Recorder
	// Keeper keeps what the next run of the daemon needs to take the
	// sessions back (nil: nothing is kept, a restart ends them).
	Keeper Keeper
	// Changed is called after a session opened or closed (for the
	// systemd status line); it must not block.
	Changed func()
}

// Protocol is the terminal, shared by every session.
type Protocol struct {
	opts Options
	log  *slog.Logger

	// bufs holds pty read buffers: a session takes one only while output
	// is ready, so idle sessions cost no buffer.
	bufs sync.Pool
}

// New builds the terminal.
func New(opts Options) *Protocol {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Recorder == nil {
		opts.Recorder = nopRecorder{}
	}
	if opts.Changed == nil {
		opts.Changed = func() {}
	}
	if opts.Reaper == nil {
		opts.Reaper = shell.NewReaper() // not running: for tests that start no shell
	}
	if opts.ReadBuffer <= 0 {
		opts.ReadBuffer = 32 << 10
	}
	return &Protocol{opts: opts, log: opts.Log}
}

// Number is proto 1.
func (t *Protocol) Number() uint16 { return wire.ProtoShell }

// frameHeadroom is the room kept in front of a pty read for the frame
// header: enough for session ids up to 256 bytes (longer ones take the
// copying path).
const frameHeadroom = 320

// getBuf returns a buffer of frameHeadroom + ReadBuffer bytes; the pool
// keeps pointers, so giving one back allocates nothing.
func (t *Protocol) getBuf() *[]byte {
	if b, ok := t.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, frameHeadroom+t.opts.ReadBuffer)
	return &b
}

func (t *Protocol) putBuf(b *[]byte) { t.bufs.Put(b) }

type nopRecorder struct{}

func (nopRecorder) SessionOpened(string)                        {}
func (nopRecorder) SessionClosed(string, string, time.Duration) {}
func (nopRecorder) TerminalBytesIn(int)                         {}
func (nopRecorder) TerminalBytesOut(int)                        {}
