//go:build !nometrics

package metrics

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
)

const unixPrefix = "unix:"

// listen opens the endpoint's listener. A unix socket replaces a stale
// socket at its path (never another kind of file), then gets its mode. In
// between it has the umask's mode (0755 under the unit's 0022), and
// connecting needs write access, so only root can connect then. The umask
// itself is not touched: it is process-wide, and a shell spawned at that
// instant would inherit the change.
func (ep Endpoint) listen() (net.Listener, error) {
	path, isUnix := strings.CutPrefix(ep.Listen, unixPrefix)
	if !isUnix {
		return net.Listen("tcp", listenAddress(ep.Listen))
	}
	mode := ep.SocketMode
	if mode == 0 {
		mode = 0o600
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// listenAddress turns a bare port into a loopback address.
func listenAddress(listen string) string {
	if _, err := strconv.ParseUint(listen, 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", listen)
	}
	return listen
}
