package mockauth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The control protocol: one command per line on a unix stream socket, one
// answer line per command, starting with "ok" or "error".
//
//	rotate                  re-authenticate (new token), wait for it
//	clear                   drop the credentials, announce empty ones
//	set <token> <url>       hand out these credentials
//	fetch                   like FetchJwtToken (not counted): "ok true|false"
//	get                     "ok token=<token> url=<url>"
//	count fetch             "ok <number of FetchJwtToken calls>"
//	fail-fetch none|reject|auth   make FetchJwtToken misbehave (see FetchFailure)
//	help                    list the commands
const controlHelp = "commands: rotate | clear | set <token> <url> | fetch | get | count fetch | fail-fetch none|reject|auth"

// maxControlLine bounds a command line; tokens are ~1 KiB.
const maxControlLine = 64 << 10

// rotateTimeout bounds how long a control "rotate" waits for the server.
const rotateTimeout = 30 * time.Second

// ServeControl answers control commands on a unix socket at path until ctx
// is done; it then closes the socket and open connections, waits for their
// handlers and returns nil. A stale socket file at path is replaced.
func (s *Service) ServeControl(ctx context.Context, path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
		_ = os.Remove(path)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	s.log.Info("control socket listening", "path", path)

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	closeAll := func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer func() {
		stop()
		closeAll()
		wg.Wait()
	}()

	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control socket accept: %w", err)
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			_ = c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveControlConn(ctx, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			_ = c.Close()
		}()
	}
}

func (s *Service) serveControlConn(ctx context.Context, c net.Conn) {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), maxControlLine)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		answer := s.controlCommand(ctx, line)
		if _, err := fmt.Fprintln(c, answer); err != nil {
			return
		}
	}
}

// controlCommand executes one command line and returns the answer line.
func (s *Service) controlCommand(ctx context.Context, line string) string {
	f := strings.Fields(line)
	cmd, args := f[0], f[1:]
	// Commands are logged without arguments: "set" carries a token.
	s.log.Info("control command", "cmd", cmd)
	switch {
	case cmd == "rotate" && len(args) == 0:
		rctx, cancel := context.WithTimeout(ctx, rotateTimeout)
		defer cancel()
		if err := s.Rotate(rctx); err != nil {
			return "error rotate: " + oneLine(err.Error())
		}
		return "ok"
	case cmd == "clear" && len(args) == 0:
		s.Clear()
		return "ok"
	case cmd == "set" && len(args) == 2:
		s.Set(args[0], args[1])
		return "ok"
	case cmd == "fetch" && len(args) == 0:
		return "ok " + strconv.FormatBool(s.Fetch())
	case cmd == "get" && len(args) == 0:
		token, url := s.Credentials()
		return fmt.Sprintf("ok token=%s url=%s", token, url)
	case cmd == "count" && len(args) == 1 && args[0] == "fetch":
		return "ok " + strconv.Itoa(s.FetchCount())
	case cmd == "fail-fetch" && len(args) == 1:
		for _, f := range []FetchFailure{FetchWorks, FetchRejected, FetchAuthFails} {
			if args[0] == f.String() {
				s.SetFetchFailure(f)
				return "ok"
			}
		}
		return "error fail-fetch wants none, reject or auth"
	case cmd == "help":
		return "ok " + controlHelp
	default:
		return "error unknown command or wrong arguments; " + controlHelp
	}
}

func oneLine(s string) string {
	return strings.ReplaceAll(s, "\n", " ")
}

// Control sends one command to a control socket and returns the answer
// after "ok" (trimmed), or an error carrying the "error ..." answer.
func Control(ctx context.Context, sockPath, cmd string) (string, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return "", errors.New("control command must be a single line")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sockPath)
	if err != nil {
		return "", fmt.Errorf("control socket: %w", err)
	}
	defer c.Close()
	// Closing the connection unblocks I/O when ctx ends before an answer.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if _, err := fmt.Fprintln(c, cmd); err != nil {
		return "", fmt.Errorf("control command %q: %w", firstWord(cmd), err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("control answer to %q: %w", firstWord(cmd), err)
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case line == "ok":
		return "", nil
	case strings.HasPrefix(line, "ok "):
		return strings.TrimSpace(line[3:]), nil
	case strings.HasPrefix(line, "error"):
		return "", fmt.Errorf("control command %q: %s", firstWord(cmd), strings.TrimSpace(strings.TrimPrefix(line, "error")))
	default:
		return "", fmt.Errorf("control command %q: malformed answer %q", firstWord(cmd), line)
	}
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}
