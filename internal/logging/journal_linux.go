package logging

import (
	"context"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"
)

// go-systemd's journal package always writes to the fixed system socket, so
// it cannot be pointed at a test double; the native protocol
// (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/) is small enough to speak
// directly. Only its stream detection is reused.

// journalWriteTimeout bounds a send when journald's queue is full; after it
// the record goes to the fallback writer instead of stalling the caller.
const journalWriteTimeout = 200 * time.Millisecond

// fieldPrefix starts every field made from an attribute.
const fieldPrefix = "TETHER_"

// maxFieldName is journald's limit; longer names are dropped by journald.
const maxFieldName = 64

// journal is the state every handler derived from one New shares.
type journal struct {
	conn     *net.UnixConn // unbound, unconnected: each send names addr, so a journald restart is harmless
	addr     *net.UnixAddr
	ident    string
	fallback slog.Handler // the bare stream handler, for the failure note
	failing  atomic.Bool  // a note has been written for the current failure episode
	timeout  time.Duration
	bufs     sync.Pool
}

// journalHandler is a slog.Handler writing native-protocol entries.
type journalHandler struct {
	j      *journal
	level  slog.Leveler
	attrs  []byte       // fields pre-encoded by WithAttrs
	prefix string       // field-name prefix: fieldPrefix plus the open groups
	stream slog.Handler // the fallback, with the same attributes and groups
}

func newJournalHandler(socket, ident string, level slog.Leveler, stream slog.Handler) (*journalHandler, error) {
	// An unbound datagram socket; the file descriptor is closed by the
	// runtime's finalizer if the logger is ever dropped.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("opening a socket for the journal: %w", err)
	}
	j := &journal{
		conn:     conn,
		addr:     &net.UnixAddr{Name: socket, Net: "unixgram"},
		ident:    ident,
		fallback: stream,
		timeout:  journalWriteTimeout,
	}
	j.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	return &journalHandler{j: j, level: level, prefix: fieldPrefix, stream: stream}, nil
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = append([]byte(nil), h.attrs...)
	for _, a := range as {
		h2.attrs = appendAttr(h2.attrs, h.prefix, a)
	}
	h2.stream = h.stream.WithAttrs(as)
	return &h2
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + fieldName(name) + "_"
	h2.stream = h.stream.WithGroup(name)
	return &h2
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	bp := h.j.bufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = appendField(b, "MESSAGE", r.Message)
	b = appendField(b, "PRIORITY", strconv.Itoa(priority(r.Level)))
	b = appendField(b, "SYSLOG_IDENTIFIER", h.j.ident)
	if r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		if f.File != "" {
			b = appendField(b, "CODE_FILE", f.File)
			b = appendField(b, "CODE_LINE", strconv.Itoa(f.Line))
		}
		if f.Function != "" {
			b = appendField(b, "CODE_FUNC", f.Function)
		}
	}
	b = append(b, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.prefix, a)
		return true
	})
	err := h.j.send(b)
	*bp = b
	if cap(b) <= 64<<10 { // keep the pool from pinning huge buffers
		h.j.bufs.Put(bp)
	}
	if err == nil {
		h.j.failing.Store(false)
		return nil
	}
	// Never lose a line: this record goes to the stream instead, preceded
	// by one note per failure episode saying why.
	if !h.j.failing.Swap(true) {
		note := slog.NewRecord(time.Now(), slog.LevelWarn,
			"journal write failed; writing log records to stderr until it works again", 0)
		note.AddAttrs(slog.String("err", err.Error()))
		_ = h.j.fallback.Handle(ctx, note)
	}
	return h.stream.Handle(ctx, r)
}

// send writes one entry: a datagram if it fits, else a sealed memfd passed
// with SCM_RIGHTS, as the protocol prescribes for large entries.
func (j *journal) send(entry []byte) error {
	if err := j.conn.SetWriteDeadline(time.Now().Add(j.timeout)); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	_, _, err := j.conn.WriteMsgUnix(entry, nil, j.addr)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EMSGSIZE) && !errors.Is(err, syscall.ENOBUFS) {
		return fmt.Errorf("journal: %w", err)
	}
	return j.sendMemfd(entry)
}

func (j *journal) sendMemfd(entry []byte) error {
	fd, err := unix.MemfdCreate("tether-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("journal: entry of %d bytes too large for a datagram, and memfd_create: %w", len(entry), err)
	}
	f := os.NewFile(uintptr(fd), "tether-journal-memfd")
	defer f.Close()
	if _, err := f.Write(entry); err != nil {
		return fmt.Errorf("journal: writing memfd: %w", err)
	}
	// journald only accepts a memfd that can no longer change.
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("journal: sealing memfd: %w", err)
	}
	if _, _, err := j.conn.WriteMsgUnix(nil, unix.UnixRights(fd), j.addr); err != nil {
		return fmt.Errorf("journal: passing memfd: %w", err)
	}
	return nil
}

// priority maps slog levels to syslog priorities.
func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // err
	case l >= slog.LevelWarn:
		return 4 // warning
	case l >= slog.LevelInfo:
		return 6 // info
	default:
		return 7 // debug, and trace
	}
}

// appendAttr encodes one attribute, flattening groups into the name with _.
func appendAttr(b []byte, prefix string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b
	}
	if a.Value.Kind() == slog.KindGroup {
		as := a.Value.Group()
		if len(as) == 0 {
			return b
		}
		if a.Key != "" {
			prefix += fieldName(a.Key) + "_"
		}
		for _, ga := range as {
			b = appendAttr(b, prefix, ga)
		}
		return b
	}
	name := prefix + fieldName(a.Key)
	if len(name) > maxFieldName {
		name = name[:maxFieldName]
	}
	return appendField(b, name, valueString(a.Value))
}

// fieldName upper-cases key and replaces everything outside [A-Z0-9_] by _.
func fieldName(key string) string {
	if key == "" {
		return "VALUE"
	}
	out := make([]byte, len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			c = '_'
		}
		out[i] = c
	}
	return string(out)
}

func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return x.Error()
		case encoding.TextMarshaler:
			if t, err := x.MarshalText(); err == nil {
				return string(t)
			}
		case []byte:
			return string(x)
		}
		return fmt.Sprint(v.Any())
	default:
		return v.String()
	}
}

// appendField writes NAME=value\n, or, when the value holds a newline, the
// binary form NAME\n<uint64 LE length><value>\n.
func appendField(b []byte, name, value string) []byte {
	for i := 0; i < len(value); i++ {
		if value[i] == '\n' {
			b = append(b, name...)
			b = append(b, '\n')
			b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
			b = append(b, value...)
			return append(b, '\n')
		}
	}
	b = append(b, name...)
	b = append(b, '=')
	b = append(b, value...)
	return append(b, '\n')
}

// stderrSuitsJournal says whether stderr should give way to the journal:
// it is journald's stream, or at least not a terminal someone watches.
func stderrSuitsJournal() bool {
	if ok, err := sdjournal.StderrIsJournalStream(); err == nil && ok {
		return true
	}
	// The raw descriptor: os.Stderr.Fd() would switch it to blocking mode.
	_, err := unix.IoctlGetTermios(syscall.Stderr, unix.TCGETS)
	return err != nil
}
