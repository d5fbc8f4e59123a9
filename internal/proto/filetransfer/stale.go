package filetransfer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/logging"
)

// Temporary files of uploads that a SIGKILL, a crash or the OOM killer
// cut off stay behind as .<name>.tether-<12 hex digits> beside their
// targets. They are found again through a journal: one small record per
// running upload in a directory of the daemon's own (<StateDir>/uploads,
// root's, 0700; StateDir is the runtime directory), written before the
// temporary file is created and removed once it has been renamed or
// unlinked. On start, each record left over names one file to remove.
//
// Why a journal and not a scan: uploads land anywhere the account may
// write (beneath the Chroot, or anywhere without one), so a scan would
// have to walk whole file systems, on every start, as the account, and
// would remove files of our naming that this daemon never wrote (another
// instance's running upload, a user's own file). A record names one
// directory and one random name, so the clean-up is a handful of system
// calls and touches only what this daemon created: the directory must
// still be the same one (device and inode), the file a regular file (a
// symlink is never followed: fstatat and unlinkat do not), owned by the
// account it was created as, with the exact random name; the lookup and
// the unlink run as that account, beneath the Chroot. The runtime
// directory is a tmpfs on most systems: the journal costs no flash
// writes, and a power loss (which also empties it) is not covered.
type journal struct {
	dir string
	fd  int // holds the lock
	// rl limits the warnings about records that cannot be written: the
	// server decides how often uploads start.
	rl logging.RateLimit
}

// isTempName says whether name is of tempName's making: a dot, at least
// one byte, ".tether-" and 12 lower-case hex digits (the regular
// expression `(?s)^\..+\.tether-[0-9a-f]{12}$`, written out: package
// regexp and the unicode tables it keeps cost about 0.2 MiB of the binary
// for this one test).
func isTempName(name []byte) bool {
	const suffix = ".tether-"
	const digits = 12
	if len(name) < 2+len(suffix)+digits || name[0] != '.' {
		return false
	}
	tail := name[len(name)-len(suffix)-digits:]
	if string(tail[:len(suffix)]) != suffix {
		return false
	}
	for _, c := range tail[len(suffix):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// record is one running upload's temporary file. Dir and Name are the
// server's bytes, not necessarily UTF-8: JSON carries them as base64
// ([]byte), unchanged.
type record struct {
	Dir  []byte `json:"dir"`  // the target directory as the upload named it
	Dev  uint64 `json:"dev"`  // and what it was then
	Ino  uint64 `json:"ino"`  //
	Name []byte `json:"name"` // the temporary file's name in it
	UID  uint32 `json:"uid"`  // its owner at creation
}

// maxRecord bounds what is read of a record: a directory the kernel
// could open (PATH_MAX) and a file name (NAME_MAX), in base64.
const maxRecord = 16 << 10

// openJournal makes <stateDir>/uploads and takes it for this process
// (an flock held until exit), so that a second daemon on the same
// directory neither removes the first one's running uploads nor records
// its own there. It returns nil, logged, when the journal cannot be used.
func openJournal(stateDir string, log *slog.Logger) *journal {
	if stateDir == "" {
		return nil
	}
	dir := filepath.Join(stateDir, "uploads")
	// The runtime directory is 0755 as systemd makes it (a metrics
	// socket may live there); the journal is root's alone.
	// Info, not Warn: a daemon run by hand as a user has no /run/tether.
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		log.Info("file transfer: no journal of temporary files; those of an interrupted upload will not be removed", "error", err)
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		log.Info("file transfer: no journal of temporary files; those of an interrupted upload will not be removed", "error", err)
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		log.Warn("file transfer: no journal of temporary files", "dir", dir, "error", err)
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Uid != uint32(os.Geteuid()) || st.Mode&0o077 != 0 {
		unix.Close(fd)
		log.Warn("file transfer: the journal directory is not the daemon's own (0700); not used", "dir", dir)
		return nil
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		log.Warn("file transfer: another daemon uses the journal of temporary files; not used", "dir", dir, "error", err)
		return nil
	}
	// The daemon never closes it: the lock lasts as long as the process.
	return &journal{dir: dir, fd: fd}
}

// close gives the journal up (tests; the daemon holds it until exit).
func (j *journal) close() {
	if j != nil {
		unix.Close(j.fd)
	}
}

// add records rec and returns the record's name, "" if it could not be
// written (the upload goes on; only its clean-up after a crash is lost).
func (j *journal) add(rec record, log *slog.Logger) string {
	if j == nil {
		return ""
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	name := hex.EncodeToString(b[:])
	data, err := json.Marshal(rec)
	if err == nil {
		err = writeNew(filepath.Join(j.dir, name), data)
	}
	if err != nil {
		if j.rl.Allow(time.Now()) {
			log.Warn("file transfer: could not record a temporary file; it is not removed should the daemon be killed",
				"error", err, "suppressed", j.rl.TakeSuppressed())
		}
		return ""
	}
	return name
}

// writeNew creates path with data; a partly written record is removed.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// done forgets a record once its temporary file is gone.
func (j *journal) done(name string) {
	if j != nil && name != "" {
		os.Remove(filepath.Join(j.dir, name))
	}
}

// sweep removes the temporary files of uploads that the previous run
// left, as the account, then their records.
func (p *Protocol) sweep() {
	j := p.journal
	if j == nil {
		return
	}
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		p.log.Warn("file transfer: cannot read the journal of temporary files", "dir", j.dir, "error", err)
		return
	}
	if len(ents) == 0 {
		return
	}
	th, err := p.opts.Identity.Start()
	if err != nil {
		p.log.Error("file transfer: cannot switch to the account to remove stale temporary files", "error", err)
		return
	}
	defer th.Close()
	for _, e := range ents {
		path := filepath.Join(j.dir, e.Name())
		rec, err := readRecord(path)
		if err == nil {
			err = th.Do(func() error { return p.removeStale(rec) })
		}
		// The path came from the server once: clipped. One line per
		// record, and there are at most as many as uploads were running.
		shown := logging.Clip(filepath.Join(string(rec.Dir), string(rec.Name)))
		switch {
		case err == nil:
			p.log.Info("file transfer: removed the temporary file of an interrupted upload", "path", shown)
		case errors.Is(err, unix.ENOENT):
			// Renamed or removed before the record was: nothing left.
		default:
			p.log.Warn("file transfer: left a temporary file of an interrupted upload",
				"record", e.Name(), "path", shown, "error", logging.Clip(err.Error()))
		}
		os.Remove(path)
	}
}

func readRecord(path string) (record, error) {
	var rec record
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	b := make([]byte, maxRecord+1)
	n, _ := f.Read(b)
	if n > maxRecord {
		return rec, errors.New("record too large")
	}
	if err := json.Unmarshal(b[:n], &rec); err != nil {
		return rec, fmt.Errorf("record: %w", err)
	}
	if !isTempName(rec.Name) || !validLeaf(string(rec.Name)) || !bytes.HasPrefix(rec.Dir, []byte("/")) {
		return rec, errors.New("record: not one of ours")
	}
	return rec, nil
}

// removeStale removes rec's file if it is still what the upload created.
// It runs as the account.
func (p *Protocol) removeStale(rec record) error {
	dirfd, err := p.res.open(string(rec.Dir), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return err
	}
	if uint64(st.Dev) != rec.Dev || uint64(st.Ino) != rec.Ino {
		return errors.New("the directory is no longer the one the upload wrote in")
	}
	if err := unix.Fstatat(dirfd, string(rec.Name), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != rec.UID {
		return errors.New("not the regular file the upload created")
	}
	return unix.Unlinkat(dirfd, string(rec.Name), 0)
}
