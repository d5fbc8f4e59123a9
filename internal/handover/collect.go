package handover

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/logging"
)

// Session is a session to restore: its record and its pty master.
type Session struct {
	Record
	Master *os.File
}

// Checks are the questions about the running system that Collect asks;
// nil fields get the real answers (tests swap them).
type Checks struct {
	// UnitAlive says a session's systemd unit still runs; nil: sessions
	// have no unit, and a record naming one is not restored.
	UnitAlive func(unit string) bool
}

// Collect matches the descriptors handed to this run with the records in
// d by name and checks each pair: the record is the daemon's own (see
// Dir.read), the descriptor is a pty master, the record's shell is alive
// and leads the terminal session of that pty, and its unit, if it names
// one, runs. It returns the pairs that pass. Everything else is cleaned
// up once, with a log line: a descriptor is closed and dropped from the
// store, a record removed; a shell is never signalled here (the pid may
// be anybody's by now; a shell whose master is gone has had its hangup).
// The caller owns the returned masters.
func Collect(d *Dir, files []NamedFile, store FDStore, checks Checks, log *slog.Logger) []Session {
	byName := make(map[string]*os.File, len(files))
	drop := func(name string, f *os.File, why string, err error) {
		log.Warn("previous run: descriptor not restored", "event", "restore_dropped", "name", logging.Clip(name),
			"reason", why, "error", err)
		f.Close()
		if name != "" {
			_ = store.Remove(name)
		}
	}
	for _, nf := range files {
		switch {
		case !validKey(nf.Name):
			drop(nf.Name, nf.File, "not a session's descriptor", nil)
		case byName[nf.Name] != nil:
			drop(nf.Name, nf.File, "a second descriptor of the same name", nil)
		default:
			byName[nf.Name] = nf.File
		}
	}
	keys, junk := d.keys()
	for _, j := range junk {
		log.Warn("previous run: unexpected file in the session records removed", "event", "restore_dropped",
			"name", logging.Clip(j))
	}
	var out []Session
	for _, key := range keys {
		f := byName[key]
		delete(byName, key)
		rec, err := d.read(key)
		if err == nil && f == nil {
			err = errors.New("its pty master is gone (the shell ended, or the store was emptied by a stop)")
		}
		if err == nil {
			err = checkPair(rec, f, checks)
		}
		if err != nil {
			log.Warn("previous run: session not restored", "event", "restore_dropped", "name", key,
				"session_id", logging.Clip(rec.SessionID), "user_id", logging.Clip(rec.UserID), "pid", rec.Pid, "reason", err.Error())
			_ = d.Remove(key)
			if f != nil {
				f.Close()
				_ = store.Remove(key)
			}
			continue
		}
		out = append(out, Session{Record: rec, Master: f})
	}
	for name, f := range byName {
		drop(name, f, "no session record", nil)
	}
	return out
}

// checkPair says why rec and master do not belong together, if they do
// not.
func checkPair(rec Record, master *os.File, checks Checks) error {
	// The unit or leaf is checked to hold the shell when it is adopted
	// (shell.Reaper.Adopt), by the containment that knows it; here only
	// what a record may name at all.
	switch {
	case rec.Unit != "" && rec.Cgroup != "":
		return errors.New("the record names both a unit and a cgroup")
	case rec.Unit != "" && !validUnit(rec.Unit):
		return fmt.Errorf("%q is not a session unit's name", logging.Clip(rec.Unit))
	case rec.Unit != "" && checks.UnitAlive != nil && !checks.UnitAlive(rec.Unit):
		return fmt.Errorf("its unit %s is gone", rec.Unit)
	case rec.Cgroup != "" && (!filepath.IsAbs(rec.Cgroup) || filepath.Clean(rec.Cgroup) != rec.Cgroup ||
		!strings.HasPrefix(filepath.Base(rec.Cgroup), "session-")):
		return fmt.Errorf("%q is not a session cgroup", logging.Clip(rec.Cgroup))
	}
	raw, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("descriptor: %w", err)
	}
	var n int
	var perr error
	if err := raw.Control(func(fd uintptr) { n, perr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN) }); err != nil {
		perr = err
	}
	if perr != nil {
		return fmt.Errorf("the descriptor is not a pty master: %w", perr)
	}
	st, err := readStat(rec.Pid)
	if err != nil {
		return fmt.Errorf("its shell is gone: %w", err)
	}
	switch {
	case st.state == 'Z' || st.state == 'X':
		return errors.New("its shell has exited")
	case st.session != rec.Pid:
		return fmt.Errorf("pid %d does not lead a terminal session (session %d): not its shell", rec.Pid, st.session)
	case st.ttyNr != ptyDev(n):
		return fmt.Errorf("pid %d's terminal is not the pty of this descriptor (/dev/pts/%d)", rec.Pid, n)
	}
	return nil
}

// validUnit says name is a session unit's (tether-session-*.service),
// as shell.ValidUnitName; the package does not depend on shell.
func validUnit(name string) bool {
	rest, ok := strings.CutPrefix(name, "tether-session-")
	if !ok {
		return false
	}
	rest, ok = strings.CutSuffix(rest, ".service")
	if !ok || rest == "" || len(rest) > 12 {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ptyDev is the device number of /dev/pts/n as /proc/<pid>/stat encodes
// tty_nr: major 136 (UNIX98_PTY_SLAVE_MAJOR) and minor n (the kernel's
// minors are 20 bits wide), in the kernel's new_encode_dev layout.
func ptyDev(n int) uint64 {
	major, minor := uint64(136), uint64(n)
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

type procStat struct {
	state   byte
	session int
	ttyNr   uint64
}

// readStat reads the state, session and controlling terminal of pid.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat parses /proc/<pid>/stat: the command name may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("unreadable /proc stat")
	}
	// state ppid pgrp session tty_nr
	f := bytes.Fields(b[i+1:])
	if len(f) < 5 || len(f[0]) != 1 {
		return procStat{}, errors.New("unreadable /proc stat")
	}
	sess, err1 := strconv.Atoi(string(f[3]))
	tty, err2 := strconv.ParseInt(string(f[4]), 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, errors.New("unreadable /proc stat")
	}
	return procStat{state: f[0][0], session: sess, ttyNr: uint64(uint32(tty))}, nil
}
