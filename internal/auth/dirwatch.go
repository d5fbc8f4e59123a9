package auth

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// dirWatch tells when anything in a directory may have changed (inotify),
// so that a token file is re-read when it is written or replaced, without
// waking every PollInterval.
type dirWatch struct {
	f       *os.File
	changed chan struct{} // capacity 1; closed when the watch ends
}

// watchDir watches dir for the changes that can alter a file in it:
// written and closed, replaced by a rename, deleted, its mode changed. Not
// a creation nor a single write: the file is read only once its writer is
// done, never half-written (an empty read would withdraw the token).
func watchDir(dir string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	const mask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
		unix.IN_DELETE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	// Non-blocking, so reads go through the runtime's poller and Close
	// ends a pending one.
	w := &dirWatch{f: os.NewFile(uintptr(fd), "inotify"), changed: make(chan struct{}, 1)}
	go w.run()
	return w, nil
}

func (w *dirWatch) run() {
	defer close(w.changed)
	buf := make([]byte, 4096)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		// The directory itself went away: the watch is dead, and the
		// caller falls back to polling.
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(buf[off:]))
			if ev.Mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 {
				w.notify()
				return
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		w.notify()
	}
}

func (w *dirWatch) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Close ends the watch; changed is closed once its reader has stopped.
func (w *dirWatch) Close() {
	w.f.Close()
	for range w.changed {
	}
}
