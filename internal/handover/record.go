// Package handover keeps what a restarted or upgraded daemon needs to take
// its shells back: a small state record per session in a root-only
// directory of the runtime directory, and the session's pty master, in
// systemd's file-descriptor store (FDSTORE=1 over the notify socket) or,
// for `tether upgrade`, inherited across an exec of the new binary. At
// start it takes the descriptors back (LISTEN_FDS, LISTEN_FDNAMES),
// matches them with the records by name, checks each pair against the
// running system and hands back the sessions to restore; whatever does
// not match is closed or removed, once, with a log line.
//
// Nothing from a previous run is trusted beyond that: a record is only
// read from a directory that is root's alone, and a record and a
// descriptor are only put together when the record's shell is alive and
// leads the terminal session of that very pty.
package handover

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Record is one session's state, as the next run of the daemon needs it.
// Durations are what was left of each clock when the record was written
// (0: the clock does not run).
type Record struct {
	// Key names the record file and the pty master's descriptor
	// (FDNAME): daemon-chosen, so that it is a valid name whatever the
	// server's session ids look like, and stable across reattaches.
	Key       string    `json:"key"`
	SessionID string    `json:"session_id"`
	UserID    string    `json:"user_id"`
	Pid       int       `json:"pid"`
	Unit      string    `json:"unit,omitempty"`   // the session's systemd unit, if it has one
	Cgroup    string    `json:"cgroup,omitempty"` // or its cgroup v2 leaf's directory
	Started   time.Time `json:"started"`
	Cols      uint16    `json:"cols"`
	Rows      uint16    `json:"rows"`

	// HandedOver says the record was written at a planned hand-over
	// (restart, upgrade): the clocks below are exact. A record written
	// when the session opened (all a crash leaves) has only the start.
	HandedOver   bool          `json:"handed_over,omitempty"`
	Detached     bool          `json:"detached,omitempty"`
	IdleLeft     time.Duration `json:"idle_left,omitempty"`
	AbsoluteLeft time.Duration `json:"absolute_left,omitempty"`
	DetachedLeft time.Duration `json:"detached_left,omitempty"`
	Written      time.Time     `json:"written"`
	// Ring is the session's replay buffer at a hand-over: the output it
	// had read but perhaps not delivered.
	Ring []byte `json:"ring,omitempty"`
}

// Key names a session's record and descriptor: its shell's pid and start,
// unique among the sessions of a device.
func Key(pid int, started time.Time) string {
	return "tether-" + strconv.Itoa(pid) + "-" + strconv.FormatInt(started.UnixMilli(), 10)
}

// validKey says name could be a Key: the only names this package writes
// or reads as files.
func validKey(name string) bool {
	rest, ok := strings.CutPrefix(name, "tether-")
	if !ok || len(name) > 64 {
		return false
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok {
		return false
	}
	for _, s := range []string{a, b} {
		if s == "" {
			return false
		}
		for _, c := range s {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// maxRecord bounds a record file: the replay buffer (Sessions.ReplayBuffer,
// at most 4 MiB, base64 in JSON) and a few fields.
const maxRecord = 8 << 20

// Dir is the root-only directory of the records.
type Dir struct {
	path string
	uid  int // its owner: the daemon's (root's) uid
}

// SessionsDir is where the records live beneath the runtime directory.
func SessionsDir(runtimeDir string) string { return filepath.Join(runtimeDir, "sessions") }

// OpenDir opens (making it, 0700, when missing) the records' directory.
// It refuses one that is a symlink, not the daemon's, or open to anyone
// else: records there decide whose terminal a shell is handed to.
func OpenDir(path string) (*Dir, error) {
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("session records: %w", err)
	}
	d := &Dir{path: path, uid: os.Geteuid()}
	if err := d.check(); err != nil {
		return nil, err
	}
	return d, nil
}

// check verifies the directory's kind, owner and mode.
func (d *Dir) check() error {
	fi, err := os.Lstat(d.path)
	if err != nil {
		return fmt.Errorf("session records: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("session records: %s is a symlink", d.path)
	case !fi.IsDir():
		return fmt.Errorf("session records: %s is not a directory", d.path)
	case st == nil || int(st.Uid) != d.uid:
		return fmt.Errorf("session records: %s is not owned by uid %d", d.path, d.uid)
	case fi.Mode().Perm() != 0o700:
		return fmt.Errorf("session records: %s has mode %04o, want 0700", d.path, fi.Mode().Perm())
	}
	return nil
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

func (d *Dir) file(key string) string { return filepath.Join(d.path, key+".json") }

// Write stores r, replacing an earlier record of its key whole: it is
// written to a temporary file that is renamed over, so a crash leaves the
// old record or the new one, never half of one.
func (d *Dir) Write(r Record) error {
	if !validKey(r.Key) {
		return fmt.Errorf("session record: bad key %q", r.Key)
	}
	if r.Written.IsZero() {
		r.Written = time.Now()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("session record %s: %w", r.Key, err)
	}
	tmp, err := os.CreateTemp(d.path, "."+r.Key+".*")
	if err != nil {
		return fmt.Errorf("session record %s: %w", r.Key, err)
	}
	_, werr := tmp.Write(b)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), d.file(r.Key))
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("session record %s: %w", r.Key, werr)
	}
	return nil
}

// Remove deletes key's record; a missing one is no error.
func (d *Dir) Remove(key string) error {
	if !validKey(key) {
		return nil
	}
	if err := os.Remove(d.file(key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("session record %s: %w", key, err)
	}
	return nil
}

// read loads key's record, refusing a file that is not a regular file of
// the daemon's, readable by it alone, or whose contents do not name it.
func (d *Dir) read(key string) (Record, error) {
	var r Record
	f, err := os.OpenFile(d.file(key), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return r, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return r, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return r, errors.New("not a regular file")
	case st == nil || int(st.Uid) != d.uid:
		return r, fmt.Errorf("not owned by uid %d", d.uid)
	case fi.Mode().Perm()&0o077 != 0:
		return r, fmt.Errorf("mode %04o is open to others", fi.Mode().Perm())
	case fi.Size() > maxRecord:
		return r, fmt.Errorf("%d bytes, more than a record holds", fi.Size())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("unreadable: %w", err)
	}
	if r.Key != key {
		return r, fmt.Errorf("names %q, not its own key", r.Key)
	}
	if r.Pid <= 1 || r.UserID == "" {
		return r, errors.New("no shell pid or no user")
	}
	return r, nil
}

// keys lists the records' keys; other files (a temporary one a crash
// left, anything else) are removed.
func (d *Dir) keys() ([]string, []string) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, nil
	}
	var keys, junk []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && validKey(name) {
			keys = append(keys, name)
			continue
		}
		if e.Name() == upgradeRequest {
			continue
		}
		junk = append(junk, e.Name())
		os.RemoveAll(filepath.Join(d.path, e.Name()))
	}
	return keys, junk
}
