package handover

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NamedFile is a descriptor handed to this run, with its name.
type NamedFile struct {
	Name string
	File *os.File
}

// The environment of descriptors passed to a new run: systemd's socket
// activation convention (sd_listen_fds(3)), which the fd store uses to give
// its descriptors back, and which an upgrade's exec uses too. systemd
// places them from descriptor 3; a running Go program cannot (its runtime
// holds low descriptors it must not lose before the exec), so an upgrade
// places them where it finds room and says where in startEnv. systemd never
// sets startEnv, so its descriptors are read from 3 as the convention
// says.
const (
	listenPID   = "LISTEN_PID"
	listenFDs   = "LISTEN_FDS"
	listenNames = "LISTEN_FDNAMES"
	startEnv    = "TETHER_LISTEN_FDS_START"
	listenStart = 3
	maxListen   = 4096
)

// ListenFiles takes the descriptors passed to this process, close-on-exec
// so no shell inherits them, and removes the variables from the
// environment. Descriptors without a name get "".
func ListenFiles() ([]NamedFile, error) {
	defer func() {
		for _, k := range []string{listenPID, listenFDs, listenNames, startEnv} {
			os.Unsetenv(k)
		}
	}()
	pid, err := strconv.Atoi(os.Getenv(listenPID))
	if err != nil || pid != os.Getpid() {
		return nil, nil // not for this process, or none
	}
	n, err := strconv.Atoi(os.Getenv(listenFDs))
	if err != nil || n <= 0 {
		return nil, nil
	}
	if n > maxListen {
		return nil, fmt.Errorf("%s=%d: too many", listenFDs, n)
	}
	start := listenStart
	if s := os.Getenv(startEnv); s != "" {
		if start, err = strconv.Atoi(s); err != nil || start < listenStart {
			return nil, fmt.Errorf("%s=%q: bad start", startEnv, s)
		}
	}
	names := strings.Split(os.Getenv(listenNames), ":")
	out := make([]NamedFile, 0, n)
	for i := 0; i < n; i++ {
		fd := start + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			continue // announced but not there
		}
		unix.CloseOnExec(fd)
		name := ""
		if i < len(names) {
			name = names[i]
		}
		out = append(out, NamedFile{Name: name, File: os.NewFile(uintptr(fd), name)})
	}
	return out, nil
}

// Exec replaces the running daemon with the binary at path, same pid, so
// that its shells stay its children: files are inherited (duplicated
// without close-on-exec, in a run of free descriptors) and announced by
// name in the environment, as ListenFiles reads them. It returns only
// when the exec failed; the duplicates are closed then.
func Exec(path string, args, env []string, files []NamedFile) error {
	fds, err := inheritable(files)
	if err != nil {
		return err
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	kept := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case listenPID, listenFDs, listenNames, startEnv:
		default:
			kept = append(kept, kv)
		}
	}
	if len(fds) > 0 {
		kept = append(kept, listenPID+"="+strconv.Itoa(os.Getpid()), listenFDs+"="+strconv.Itoa(len(fds)),
			listenNames+"="+strings.Join(names, ":"), startEnv+"="+strconv.Itoa(fds[0]))
	}
	err = syscall.Exec(path, args, kept)
	for _, fd := range fds {
		unix.Close(fd)
	}
	return fmt.Errorf("exec %s: %w", path, err)
}

// inheritable duplicates files, without close-on-exec, onto consecutive
// descriptors above every open one; another goroutine opening a file
// meanwhile only moves the run up.
func inheritable(files []NamedFile) ([]int, error) {
	if len(files) == 0 {
		return nil, nil
	}
	for try := 0; try < 8; try++ {
		start, err := highestFD()
		if err != nil {
			return nil, err
		}
		start += 1 + try*64
		fds := make([]int, 0, len(files))
		ok := true
		for i, f := range files {
			raw, err := f.File.SyscallConn()
			if err != nil {
				closeAll(fds)
				return nil, fmt.Errorf("inherit %s: %w", f.Name, err)
			}
			var nfd int
			var derr error
			if err := raw.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD, start+i) }); err != nil {
				derr = err
			}
			if derr != nil {
				closeAll(fds)
				return nil, fmt.Errorf("inherit %s: %w", f.Name, derr)
			}
			fds = append(fds, nfd)
			if nfd != start+i {
				ok = false
				break
			}
		}
		if ok {
			return fds, nil
		}
		closeAll(fds)
	}
	return nil, errors.New("inherit descriptors: no run of free descriptors")
}

func highestFD() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("list open descriptors: %w", err)
	}
	hi := 2
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > hi {
			hi = n
		}
	}
	return hi, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
