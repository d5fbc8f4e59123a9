// Package utmp writes a terminal session's login records the way login
// and sshd do: a USER_PROCESS entry in utmp while the session lives (who,
// w), replaced by a DEAD_PROCESS one when it ends, and both appended to
// wtmp (last). The files are glibc's struct utmp arrays, written directly
// (no cgo) under the same fcntl write lock glibc's pututline and updwtmp
// take, so concurrent writers (systemd, sshd, login) never interleave.
package utmp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Default paths, as glibc's paths.h has them (/var/run is /run today).
const (
	UtmpPath   = "/run/utmp"
	VarRunUtmp = "/var/run/utmp"
	WtmpPath   = "/var/log/wtmp"
	// WtmpDBPath is wtmpdb's SQLite database, which last reads on
	// distributions that dropped wtmp (Debian 13, openSUSE); tether does
	// not write it.
	WtmpDBPath = "/var/lib/wtmpdb/wtmp.db"
)

// lockWait bounds the wait for another writer's lock: glibc gives up
// after 10 s; a session start should not wait that long.
const lockWait = time.Second

// Files are the record files to write; "" leaves one out.
type Files struct {
	Utmp string
	Wtmp string
}

// Detect returns the files that exist on this system, and a sentence
// saying what is (and is not) written, for the log at start. No file is
// created: a system without utmp has chosen not to keep one.
func Detect() (Files, string) {
	var f Files
	for _, p := range []string{UtmpPath, VarRunUtmp} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			f.Utmp = p
			break
		}
	}
	if st, err := os.Stat(WtmpPath); err == nil && st.Mode().IsRegular() {
		f.Wtmp = WtmpPath
	}
	_, err := os.Stat(WtmpDBPath)
	return f, f.describe(err == nil)
}

// describe says what is written to f, and that wtmpdb, which last reads
// where it exists, is not.
func (f Files) describe(wtmpdb bool) string {
	if native == nil {
		return "not written: struct utmp's layout is not known for this architecture; the log's session_open and session_close events (the journal's under systemd) are the record"
	}
	var s string
	switch {
	case f.Utmp != "" && f.Wtmp != "":
		s = "utmp " + f.Utmp + " (who, w) and wtmp " + f.Wtmp + " (last)"
	case f.Utmp != "":
		s = "utmp " + f.Utmp + " (who, w); no wtmp, last will not list tether sessions"
	case f.Wtmp != "":
		s = "wtmp " + f.Wtmp + " (last); no utmp, who will not list tether sessions"
	default:
		s = "no utmp or wtmp on this system; the log's session_open and session_close events (the journal's under systemd) are the record"
	}
	if f.Wtmp == "" && wtmpdb {
		s += "; wtmpdb (" + WtmpDBPath + ", which last reads here) is not written: last will not list tether sessions"
	}
	return s
}

// Recorder writes the records of every session.
type Recorder struct {
	files Files
	l     *layout
	now   func() time.Time
	// mu serialises this process's writers: the fcntl lock keeps other
	// processes out, and one file at a time is plenty.
	mu sync.Mutex
}

// New returns a recorder for files, or nil when there is nothing to
// write (no file, or an architecture whose layout is unknown). A nil
// recorder records nothing.
func New(files Files) *Recorder {
	if native == nil || (files.Utmp == "" && files.Wtmp == "") {
		return nil
	}
	return &Recorder{files: files, l: native, now: time.Now}
}

// Login describes a session to record.
type Login struct {
	Line string // the terminal without /dev/, e.g. "pts/3"
	User string // the local account
	Host string // shown as the remote host; made printable and clipped
	PID  int    // the session leader (the shell)
}

// Entry is a recorded session; Logout ends it.
type Entry struct {
	r   *Recorder
	rec Record
}

// Login writes the session's USER_PROCESS entry to utmp and wtmp. The
// entry it returns is valid even when a file failed (the error says
// which), so that Logout still closes what was written. A nil recorder
// returns a nil entry and no error.
func (r *Recorder) Login(l Login) (*Entry, error) {
	if r == nil {
		return nil, nil
	}
	rec := Record{
		Type:    UserProcess,
		PID:     int32(l.PID),
		Line:    printable(l.Line, lineSize),
		User:    printable(l.User, userSize),
		Host:    printable(l.Host, hostSize),
		Session: int32(l.PID), // the shell leads its own session
		Time:    r.now(),
	}
	rec.ID = lineID(rec.Line)
	return &Entry{r: r, rec: rec}, r.write(&rec)
}

// Resume is Login for a session whose entry an earlier run of the daemon
// wrote (a shell kept across an upgrade or restart): nothing is written
// now, and Logout closes the entry as if this run had written it.
func (r *Recorder) Resume(l Login) *Entry {
	if r == nil {
		return nil
	}
	rec := Record{Type: UserProcess, PID: int32(l.PID), Line: printable(l.Line, lineSize),
		User: printable(l.User, userSize), Host: printable(l.Host, hostSize), Session: int32(l.PID)}
	rec.ID = lineID(rec.Line)
	return &Entry{r: r, rec: rec}
}

// Logout marks the session's utmp entry dead and appends the logout to
// wtmp, as logout(3) and logwtmp(3) do: no user and host, the same line.
// A nil entry does nothing.
func (e *Entry) Logout() error {
	if e == nil {
		return nil
	}
	rec := e.rec
	rec.Type, rec.User, rec.Host = DeadProcess, "", ""
	rec.Time = e.r.now()
	return e.r.write(&rec)
}

func (r *Recorder) write(rec *Record) error {
	b := r.l.encode(rec)
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if r.files.Utmp != "" {
		if err := putUtmp(r.files.Utmp, r.l, rec.ID, b); err != nil {
			errs = append(errs, fmt.Errorf("utmp %s: %w", r.files.Utmp, err))
		}
	}
	if r.files.Wtmp != "" {
		if err := appendWtmp(r.files.Wtmp, r.l, b); err != nil {
			errs = append(errs, fmt.Errorf("wtmp %s: %w", r.files.Wtmp, err))
		}
	}
	return errors.Join(errs...)
}

// putUtmp writes b over the entry of the same ut_id (a process entry:
// init, login, user or dead), else after the last whole record, as
// pututline does.
func putUtmp(path string, l *layout, id string, b []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lock(f); err != nil {
		return err
	}
	// Closing the file drops the lock.
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	off := int64(len(data) - len(data)%l.size)
	for o := 0; o+l.size <= len(data); o += l.size {
		rec := data[o : o+l.size]
		if isProcess(int16(byteOrder.Uint16(rec[offType:]))) && cstr(rec[offID:offID+idSize]) == id {
			off = int64(o)
			break
		}
	}
	_, err = f.WriteAt(b, off)
	return err
}

// isProcess says whether a record of type t belongs to a line's process,
// the records pututline matches by ut_id.
func isProcess(t int16) bool {
	return t == InitProcess || t == LoginProc || t == UserProcess || t == DeadProcess
}

// appendWtmp appends b to wtmp, first cutting a partial record a crashed
// writer left (as updwtmp does), so every record stays aligned.
func appendWtmp(path string, l *layout, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lock(f); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	off := st.Size() - st.Size()%int64(l.size)
	if off != st.Size() {
		if err := f.Truncate(off); err != nil {
			return err
		}
	}
	if _, err := f.WriteAt(b, off); err != nil {
		// Leave no partial record behind.
		_ = f.Truncate(off)
		return err
	}
	return nil
}

// lock takes a write lock on the whole file, waiting up to lockWait for
// another writer. Open-file-description locks conflict with the
// process-associated locks glibc takes, and, unlike those, are not
// dropped when another goroutine closes an unrelated descriptor of the
// same file.
func lock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	cmd := unix.F_OFD_SETLK
	deadline := time.Now().Add(lockWait)
	for {
		var lerr error
		if err := rc.Control(func(fd uintptr) {
			fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
			lerr = unix.FcntlFlock(fd, cmd, &fl)
		}); err != nil {
			return err
		}
		switch {
		case lerr == nil:
			return nil
		case errors.Is(lerr, unix.EINVAL) && cmd == unix.F_OFD_SETLK:
			cmd = unix.F_SETLK // a kernel before 3.15
			continue
		case !errors.Is(lerr, unix.EAGAIN) && !errors.Is(lerr, unix.EACCES):
			return fmt.Errorf("lock: %w", lerr)
		case time.Now().After(deadline):
			return fmt.Errorf("lock: held by another writer for %s", lockWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Read decodes a utmp or wtmp file of this architecture (for tests and
// tools; login records are read with who, w and last).
func Read(path string) ([]Record, error) {
	if native == nil {
		return nil, errors.New("struct utmp's layout is not known for this architecture")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b)%native.size != 0 {
		return nil, fmt.Errorf("%s: %d bytes are not whole %d-byte records", path, len(b), native.size)
	}
	out := make([]Record, 0, len(b)/native.size)
	for o := 0; o < len(b); o += native.size {
		r, err := native.decode(b[o : o+native.size])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
