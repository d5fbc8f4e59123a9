// Package fleetbench runs a fleet of real tether daemons against one
// mock-mender process on loopback and measures, at the server, what the
// reconnect rules do to it: connects in any 100 ms, dials per device, when
// every device is back, the server's CPU; and what the fleet costs at
// rest. Beside each figure it puts the simulator's (internal/tools/fleetsim)
// for the same fleet and rules. `make bench-fleet` runs it for 1,000
// daemons (internal/tools/bench/fleetbench); a test with 50 runs in
// `make test` (internal/tstest/fleettest).
package fleetbench

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

// Options configure a Fleet.
type Options struct {
	// Tether and Mock are the binaries of the daemon and of mock-mender.
	Tether, Mock string
	// N is the number of daemons.
	N int
	// Dir holds every daemon's directory, the server's key and its
	// connect log; it must exist.
	Dir string
	// Reconnect is merged into every daemon's Reconnect config section
	// (e.g. {"StartJitter": "0s"}); nil keeps the defaults.
	Reconnect map[string]string
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
}

// Fleet is one mock-mender and N daemons.
type Fleet struct {
	opts   Options
	addr   string // the server's host:port, the same across restarts
	url    string
	key    []byte
	issuer *mockserver.Server // signs the devices' tokens with the server's key
	log    string             // the server's connect log

	server *proc

	mu      sync.Mutex
	daemons []*proc
	// tokenFiles: the running daemons read their tokens from files.
	tokenFiles bool
	gate       *os.File // write end; closing it starts the gated daemons
	// failed counts "server connection failed" lines of every daemon, with
	// the time each was read.
	failed []time.Time
	// waiting counts "token file unusable" lines: a daemon started
	// without its token file is up and waits for it.
	waiting  atomic.Int64
	stderrW  *os.File
	readDone chan struct{}
	lines    atomic.Int64
}

type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func start(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// New prepares a fleet: a free loopback port for the server, a signing
// key, the daemons' stderr reader. Nothing runs until StartServer and
// StartDaemons.
func New(opts Options) (*Fleet, error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	f := &Fleet{opts: opts, addr: addr, url: "http://" + addr, log: filepath.Join(opts.Dir, "connects.log")}
	f.key = make([]byte, 32)
	for i := range f.key {
		f.key[i] = byte(i*7 + 13) // any fixed key: tokens only need to verify at this server
	}
	f.issuer = mockserver.New(mockserver.Options{SigningKey: f.key})
	if err := os.WriteFile(filepath.Join(opts.Dir, "server.key"), []byte(hex.EncodeToString(f.key)), 0o600); err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	f.stderrW = w
	f.readDone = make(chan struct{})
	go f.readStderr(r)
	return f, nil
}

// readStderr counts the daemons' failed dials: every daemon writes its
// log (warn and above) to one pipe, a line per write.
func (f *Fleet) readStderr(r *os.File) {
	defer close(f.readDone)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if f.lines.Add(1) <= 3 {
			f.progress("daemon log: %s", sc.Text())
		}
		if strings.Contains(sc.Text(), "token file unusable") {
			f.waiting.Add(1)
		}
		if strings.Contains(sc.Text(), "server connection failed") {
			now := time.Now()
			f.mu.Lock()
			f.failed = append(f.failed, now)
			f.mu.Unlock()
		}
	}
}

// FailedDials returns the failed dials the daemons logged in [from, to).
func (f *Fleet) FailedDials(from, to time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range f.failed {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// LogLines is how many lines the daemons logged in all (warn and above).
func (f *Fleet) LogLines() int64 { return f.lines.Load() }

// URL is the server's base URL.
func (f *Fleet) URL() string { return f.url }

// Token is device i's token, signed with the server's key as its own
// authentication request would have it.
func (f *Fleet) token(i int) string { return f.issuer.IssueDeviceToken(DeviceID(i)) }

// DeviceID is daemon i's device id.
func DeviceID(i int) string { return fmt.Sprintf("fleet-%05d", i) }

// StartServer starts mock-mender on the fleet's address with extra flags
// and returns when it listens.
func (f *Fleet) StartServer(extra ...string) error {
	args := append([]string{"serve", "--listen", f.addr, "--key-file", filepath.Join(f.opts.Dir, "server.key"),
		"--connect-log", f.log, "--log-level", "error"}, extra...)
	cmd := exec.Command(f.opts.Mock, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	p, err := start(cmd)
	if err != nil {
		return err
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case u := <-line:
		if u != f.url {
			p.stop(syscall.SIGKILL, 0)
			return fmt.Errorf("mock-mender printed %q, want %s", u, f.url)
		}
	case <-p.exited:
		return errors.New("mock-mender exited at start")
	case <-time.After(20 * time.Second):
		p.stop(syscall.SIGKILL, 0)
		return errors.New("mock-mender did not start within 20 s")
	}
	f.server = p
	return nil
}

// StopServer ends the server (SIGTERM: it closes every socket with 1001,
// as a server that shuts down does).
func (f *Fleet) StopServer() {
	if f.server != nil {
		f.server.stop(syscall.SIGTERM, 30*time.Second)
		f.server = nil
	}
}

// ServerPID is the running server's process id (0: none).
func (f *Fleet) ServerPID() int {
	if f.server == nil {
		return 0
	}
	return f.server.pid()
}

// CloseDeviceSockets makes the server drop every device socket (1011) and
// stay up.
func (f *Fleet) CloseDeviceSockets() error {
	if f.server == nil {
		return errors.New("no server")
	}
	return f.server.cmd.Process.Signal(syscall.SIGUSR1)
}

// daemonSpec is how StartDaemons runs one daemon.
type daemonSpec struct {
	// tokenFile: the token in a file (Auth.TokenFile), which a rotation
	// rewrites, instead of inline (Auth.Token).
	tokenFile bool
	// uid, when not 0, runs daemon i as user uid+i (root only): each
	// token file's inotify instance then counts against its own user's
	// limit (128 by default), as on a device of its own.
	uid int
	// noToken starts the daemons with empty token files: each starts and
	// waits for authorization until WriteTokens.
	noToken bool
}

// StartDaemons starts the N daemons, each with its own directory (config,
// runtime directory), device identity and inline token, held at a gate:
// none runs tether until Release, which lets all go in one instant.
func (f *Fleet) StartDaemons() error { return f.startDaemons(daemonSpec{}) }

func (f *Fleet) startDaemons(spec daemonSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.daemons) > 0 {
		return errors.New("daemons already running")
	}
	gr, gw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer gr.Close()
	f.gate = gw
	f.tokenFiles = spec.tokenFile
	user := "nobody"
	if spec.uid == 0 {
		if u := os.Getenv("USER"); u != "" && os.Geteuid() != 0 {
			user = u
		}
	}
	if err := os.MkdirAll(filepath.Join(f.opts.Dir, "d"), 0o755); err != nil {
		return err
	}
	for i := 0; i < f.opts.N; i++ {
		dir := filepath.Join(f.opts.Dir, "d", strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		auth := map[string]string{"Source": "static", "Token": f.token(i)}
		if spec.tokenFile {
			tf := filepath.Join(dir, "token")
			tok := auth["Token"]
			if spec.noToken {
				tok = "" // the config must name a file; an empty one is no token
			}
			if err := os.WriteFile(tf, []byte(tok), 0o600); err != nil {
				return err
			}
			auth = map[string]string{"Source": "static", "TokenFile": tf}
		}
		cfg := map[string]interface{}{
			"User": user, "ShellCommand": "/bin/sh", "ServerURL": f.url,
			"Auth":    auth,
			"Log":     map[string]string{"Level": "warn", "Journal": "off"},
			"Metrics": map[string]string{"Listen": ""},
		}
		if f.opts.Reconnect != nil {
			cfg["Reconnect"] = f.opts.Reconnect
		}
		b, _ := json.Marshal(cfg)
		conf := filepath.Join(dir, "tether.conf")
		if err := os.WriteFile(conf, b, 0o600); err != nil {
			return err
		}
		// The shell waits for the gate (EOF on fd 3), closes it, and
		// becomes tether: all N exec in the same instant.
		cmd := exec.Command("/bin/sh", "-c", `read x <&3; exec 3<&-; exec "$0" "$@"`,
			f.opts.Tether, "-c", conf, "-b", filepath.Join(dir, "none"), "daemon")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "RUNTIME_DIRECTORY=" + dir}
		cmd.ExtraFiles = []*os.File{gr}
		cmd.Stderr = f.stderrW
		if spec.uid != 0 {
			for _, p := range []string{dir, conf, filepath.Join(dir, "token")} {
				if err := os.Lchown(p, spec.uid+i, spec.uid+i); err != nil && !os.IsNotExist(err) {
					return err
				}
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(spec.uid + i), Gid: uint32(spec.uid + i)}}
		}
		p, err := start(cmd)
		if err != nil {
			return fmt.Errorf("daemon %d: %w", i, err)
		}
		p.dir = dir
		f.daemons = append(f.daemons, p)
	}
	return nil
}

// PrepareTokens writes a new token for every daemon beside its token
// file; SwapTokens then renames them into place (as docs/building.md
// says to replace a token file), which takes a few microseconds each, so
// the fleet gets its tokens in as near one instant as one process can.
func (f *Fleet) PrepareTokens(uidBase int) error {
	for i := 0; i < f.opts.N; i++ {
		tmp := filepath.Join(f.opts.Dir, "d", strconv.Itoa(i), "token.new")
		if err := os.WriteFile(tmp, []byte(f.token(i)), 0o600); err != nil {
			return err
		}
		if uidBase != 0 {
			if err := os.Lchown(tmp, uidBase+i, uidBase+i); err != nil {
				return err
			}
		}
	}
	return nil
}

// SwapTokens renames the prepared tokens into place.
func (f *Fleet) SwapTokens() error {
	for i := 0; i < f.opts.N; i++ {
		dir := filepath.Join(f.opts.Dir, "d", strconv.Itoa(i))
		if err := os.Rename(filepath.Join(dir, "token.new"), filepath.Join(dir, "token")); err != nil {
			return err
		}
	}
	return nil
}

// Release opens the gate: every daemon started since becomes tether now.
func (f *Fleet) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gate != nil {
		f.gate.Close()
		f.gate = nil
	}
}

// StopDaemons ends every daemon (SIGTERM) and waits for them.
func (f *Fleet) StopDaemons() {
	f.Release()
	f.mu.Lock()
	ds := f.daemons
	f.daemons = nil
	f.mu.Unlock()
	for _, d := range ds {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, d := range ds {
		d.stop(syscall.SIGKILL, 20*time.Second)
	}
}

// DaemonPIDs are the running daemons' process ids.
func (f *Fleet) DaemonPIDs() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]int, 0, len(f.daemons))
	for _, d := range f.daemons {
		select {
		case <-d.exited:
		default:
			out = append(out, d.pid())
		}
	}
	return out
}

// Close stops everything.
func (f *Fleet) Close() {
	f.StopDaemons()
	f.StopServer()
	if f.stderrW != nil {
		f.stderrW.Close()
		<-f.readDone
		f.stderrW = nil
	}
}

// Connect is one line of the server's connect log.
type Connect struct {
	At     time.Time
	Status int
	Device string
}

// Connects reads the server's connect log from the given time on.
func (f *Fleet) Connects(from time.Time) ([]Connect, error) {
	b, err := os.ReadFile(f.log)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []Connect
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Fields(l)
		if len(fs) != 3 {
			continue
		}
		ns, err1 := strconv.ParseInt(fs[0], 10, 64)
		st, err2 := strconv.Atoi(fs[1])
		if err1 != nil || err2 != nil {
			continue
		}
		at := time.Unix(0, ns)
		if at.Before(from) {
			continue
		}
		out = append(out, Connect{At: at, Status: st, Device: fs[2]})
	}
	return out, nil
}

// WaitBack waits until every device has connected (101) since from, or
// ctx ends; it returns the connects since from.
func (f *Fleet) WaitBack(ctx context.Context, from time.Time) ([]Connect, error) {
	for {
		cs, err := f.Connects(from)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, c := range cs {
			if c.Status == 101 {
				seen[c.Device] = true
			}
		}
		if len(seen) >= f.opts.N {
			return cs, nil
		}
		select {
		case <-ctx.Done():
			return cs, fmt.Errorf("%d of %d devices back after %v: %w", len(seen), f.opts.N, time.Since(from).Round(time.Second), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (f *Fleet) progress(format string, args ...interface{}) {
	fmt.Fprintf(f.opts.Progress, "%s "+format+"\n", append([]interface{}{time.Now().Format("15:04:05")}, args...)...)
}

// SetReconnect changes the Reconnect section of daemons started from now on.
func (f *Fleet) SetReconnect(r map[string]string) { f.opts.Reconnect = r }
