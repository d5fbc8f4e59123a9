package shell

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/tether-agent/tether/internal/systemd1"
)

// SliceName is the slice every session's unit sits in: `systemctl status
// tether.slice` lists the sessions.
const SliceName = "tether.slice"

// minSystemd is the oldest systemd the units work with: Type=exec (240),
// so the daemon knows the shell has its terminal open once the start job
// is done.
const minSystemd = 240

// systemdUnits starts session shells as transient units of systemd over
// the system bus and watches them end.
type systemdUnits struct {
	bus         *dbus.Conn
	version     int
	limits      Limits
	memMax      uint64
	stopTimeout time.Duration
	mount       string // the cgroup2 mount, for usage figures ("" = none)

	mu      sync.Mutex
	watches map[dbus.ObjectPath]chan struct{}
	sigs    chan *dbus.Signal

	// jobMu is held from a start call until its job is in jobs, so that
	// the job's JobRemoved, read by dispatch, finds it.
	jobMu sync.Mutex
	jobs  map[dbus.ObjectPath]chan<- string
}

// connectSystemd answers whether systemd runs the device and its manager
// answers on the system bus, and connects for good if so.
func connectSystemd(ctx context.Context, lim Limits, grace time.Duration) (*systemdUnits, error) {
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return nil, errors.New("PID 1 is not systemd (/run/systemd/system does not exist)")
	}
	// Not WithContext: the connection lives as long as the daemon, ctx
	// bounds only the probe's calls.
	bus, err := dbus.SystemBusPrivate()
	if err != nil {
		return nil, fmt.Errorf("system bus: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			bus.Close()
		}
	}()
	if err := bus.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		return nil, fmt.Errorf("system bus: %w", err)
	}
	if err := bus.Hello(); err != nil {
		return nil, fmt.Errorf("system bus: %w", err)
	}
	// The start jobs' ends; the references AddRef takes are held by, and
	// dropped with, this connection.
	if err := bus.AddMatchSignalContext(ctx, systemd1.MatchJobRemoved()...); err != nil {
		return nil, fmt.Errorf("systemd: %w", err)
	}
	v, err := systemd1.Get(ctx, bus, systemd1.Path, systemd1.Manager, "Version")
	if err != nil {
		return nil, fmt.Errorf("systemd does not answer on the system bus: %w", err)
	}
	s, _ := v.Value().(string)
	version := leadingInt(strings.TrimPrefix(s, "v"))
	if version < minSystemd {
		return nil, fmt.Errorf("systemd %q is older than %d (Type=exec)", s, minSystemd)
	}
	if err := systemd1.Subscribe(ctx, bus); err != nil {
		return nil, fmt.Errorf("systemd: subscribe: %w", err)
	}
	u := &systemdUnits{bus: bus, version: version, limits: lim,
		memMax: lim.memoryBytes(totalRAM()), stopTimeout: 2 * grace,
		mount:   cgroup2Mount("/proc/self/mountinfo"),
		watches: make(map[dbus.ObjectPath]chan struct{}), sigs: make(chan *dbus.Signal, 64),
		jobs: make(map[dbus.ObjectPath]chan<- string)}
	bus.Signal(u.sigs)
	go u.dispatch()
	ok = true
	return u, nil
}

func leadingInt(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// dispatch hands a start job's result to its starter, and wakes the
// watcher of a unit whose properties changed; the watcher reads the state
// itself (signals may arrive out of order).
func (u *systemdUnits) dispatch() {
	for sig := range u.sigs {
		if job, result, ok := systemd1.JobRemoved(sig); ok {
			u.jobMu.Lock()
			if ch := u.jobs[job]; ch != nil {
				ch <- result // buffered, one result per job
				delete(u.jobs, job)
			}
			u.jobMu.Unlock()
			continue
		}
		if !systemd1.IsPropertiesChanged(sig) {
			continue
		}
		u.mu.Lock()
		ch := u.watches[sig.Path]
		u.mu.Unlock()
		if ch != nil {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func (u *systemdUnits) close() { u.bus.Close() }

func (u *systemdUnits) describe() string {
	return fmt.Sprintf("transient systemd units in %s (systemd %d; memory %s, tasks %s, CPU weight %s per session)",
		SliceName, u.version, formatBytes(u.memMax), limitWord(uint64(u.limits.TasksMax)), limitWord(uint64(u.limits.CPUWeight)))
}

func limitWord(v uint64) string {
	if v == 0 {
		return "no limit"
	}
	return strconv.FormatUint(v, 10)
}

// unitPath is the object path of a unit.
func unitPath(name string) dbus.ObjectPath { return systemd1.UnitPath(name) }

// unitProperties are the transient unit of a session's shell: the user's
// identity and environment, the pty's slave as its controlling terminal,
// the limits, and a teardown of its whole cgroup.
func unitProperties(s Spec, tty string, lim Limits, memMax uint64, stopTimeout time.Duration) []systemd1.Property {
	a := s.Account
	groups := make([]string, 0, len(a.Groups))
	for _, g := range a.Groups {
		groups = append(groups, strconv.FormatUint(uint64(g), 10))
	}
	desc := "tether session"
	if s.SessionID != "" {
		desc += " " + printable(s.SessionID, 64)
	}
	if s.UserID != "" {
		desc += " of user " + printable(s.UserID, 64)
	}
	p := systemd1.Prop
	props := []systemd1.Property{
		p("Description", desc),
		p("Slice", SliceName),
		// Not ordered after basic.target: a device stuck in its boot
		// must still be reachable, and a shell opened early must not
		// wait for the boot. Stopped at shutdown all the same.
		p("DefaultDependencies", false),
		p("Conflicts", []string{"shutdown.target"}),
		p("Before", []string{"shutdown.target"}),
		// "started" only once the shell is exec'd: it has opened its
		// terminal by then, and a missing shell fails the start.
		p("Type", "exec"),
		systemd1.ExecStart(append([]string{s.Command}, s.Args...)),
		p("User", a.Name),
		p("Group", strconv.FormatUint(uint64(a.GID), 10)),
		p("SupplementaryGroups", groups),
		p("Environment", environment(s)),
		p("WorkingDirectory", a.workDir()),
		// systemd makes the slave the controlling terminal of the shell's
		// new session (setsid, TIOCSCTTY) and hands it to the user: job
		// control and Ctrl-C work as on a login.
		p("TTYPath", tty),
		p("StandardInput", "tty"),
		p("StandardOutput", "tty"),
		p("StandardError", "tty"),
		// A service ignores SIGPIPE by default; a shell's pipelines
		// (yes | head) rely on it.
		p("IgnoreSIGPIPE", false),
		// Stop: SIGTERM and SIGHUP to every process of the cgroup, SIGKILL
		// to what is left after two graces.
		p("KillMode", "control-group"),
		p("SendSIGHUP", true),
		p("TimeoutStopUSec", uint64(stopTimeout/time.Microsecond)),
		// Gone once ended, failed or not; the daemon's reference keeps it
		// loaded until it has read how it ended.
		p("CollectMode", "inactive-or-failed"),
		p("AddRef", true),
	}
	if memMax != math.MaxUint64 {
		props = append(props, p("MemoryMax", memMax))
	}
	if lim.TasksMax > 0 {
		props = append(props, p("TasksMax", uint64(lim.TasksMax)))
	}
	if lim.CPUWeight > 0 {
		props = append(props, p("CPUWeight", uint64(lim.CPUWeight)))
	}
	if lim.PAMService != "" {
		props = append(props, p("PAMName", lim.PAMService))
	}
	return props
}

// printable keeps what is safe in a unit's description, clipped to n.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '\\' || r == '%' {
			return '_'
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// startUnit starts the shell of s in a unit of its own on the pty slave
// tty. p gets the unit's end: Done, ExitErr and the limit it hit.
func (u *systemdUnits) startUnit(s Spec, short, tty string, p *Process) error {
	props := unitProperties(s, tty, u.limits, u.memMax, u.stopTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; ; i++ {
		name := "tether-session-" + short
		if i > 1 {
			name += "-" + strconv.Itoa(i)
		}
		name += ".service"
		path := unitPath(name)
		wake := make(chan struct{}, 1)
		u.mu.Lock()
		u.watches[path] = wake
		u.mu.Unlock()
		match := systemd1.MatchPropertiesChanged(path)
		// Before the start, so that no change goes unseen.
		if err := u.bus.AddMatchSignalContext(ctx, match...); err != nil {
			u.forget(path)
			return fmt.Errorf("systemd: watch %s: %w", name, err)
		}
		job := make(chan string, 1)
		err := u.start(ctx, name, props, job)
		var de dbus.Error
		if errors.As(err, &de) && de.Name == systemd1.ErrUnitExists && i < 100 {
			_ = u.bus.RemoveMatchSignalContext(ctx, match...)
			u.forget(path)
			continue
		}
		if err != nil {
			_ = u.bus.RemoveMatchSignalContext(ctx, match...)
			u.forget(path)
			return fmt.Errorf("systemd: start %s: %w", name, err)
		}
		up := &unitProc{u: u, name: name, path: path, wake: wake, match: match}
		p.unit = up
		var result string
		select {
		case result = <-job:
		case <-ctx.Done():
			result = "timeout"
		}
		if result != "done" {
			// Ended or never ran: read how, and let it go.
			why := up.result(ctx)
			up.release()
			return fmt.Errorf("systemd: start %s: job %s (%s)", name, result, why)
		}
		if pid, err := up.uint32Prop(ctx, systemd1.ServiceIface, "MainPID"); err == nil {
			p.pid = int(pid)
		}
		if cg, err := up.stringProp(ctx, systemd1.ServiceIface, "ControlGroup"); err == nil && cg != "" && u.mount != "" {
			p.cgroupDir = u.mount + cg
		}
		go up.watch(p)
		return nil
	}
}

// start starts the unit name; job gets its start job's result.
func (u *systemdUnits) start(ctx context.Context, name string, props []systemd1.Property, job chan<- string) error {
	u.jobMu.Lock()
	defer u.jobMu.Unlock()
	path, err := systemd1.StartTransientUnit(ctx, u.bus, name, "fail", props)
	if err != nil {
		return err
	}
	u.jobs[path] = job
	return nil
}

// ValidUnitName says name is one startUnit could have given:
// tether-session-<1 to 8 of a-z0-9>[-<1 to 3 digits>].service; a record
// naming any other unit is refused. Written out rather than a regexp,
// which would bring the regexp package into the slim build.
func ValidUnitName(name string) bool {
	rest, ok := strings.CutPrefix(name, "tether-session-")
	if !ok {
		return false
	}
	if rest, ok = strings.CutSuffix(rest, ".service"); !ok {
		return false
	}
	short, n, dashed := strings.Cut(rest, "-")
	if len(short) < 1 || len(short) > 8 {
		return false
	}
	for _, c := range short {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	if !dashed {
		return true
	}
	if len(n) < 1 || len(n) > 3 {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// adopt takes back the unit of a shell from a previous run: the unit must
// be a session's by name, be running, and have pid as its main process
// (systemd's word, not the record's). The daemon takes a reference on it
// again (the previous run's went with its bus connection) and watches it
// end as for a unit it started.
func (u *systemdUnits) adopt(p *Process, name string) error {
	if !ValidUnitName(name) {
		return fmt.Errorf("%q is not a session unit's name", logClip(name))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := unitPath(name)
	wake := make(chan struct{}, 1)
	u.mu.Lock()
	if _, dup := u.watches[path]; dup {
		u.mu.Unlock()
		return fmt.Errorf("unit %s is taken already", name)
	}
	u.watches[path] = wake
	u.mu.Unlock()
	match := systemd1.MatchPropertiesChanged(path)
	if err := u.bus.AddMatchSignalContext(ctx, match...); err != nil {
		u.forget(path)
		return fmt.Errorf("systemd: watch %s: %w", name, err)
	}
	up := &unitProc{u: u, name: name, path: path, wake: wake, match: match}
	fail := func(err error) error {
		_ = u.bus.RemoveMatchSignalContext(ctx, match...)
		u.forget(path)
		return err
	}
	// GetUnit fails for a unit that is not loaded: it never loads one.
	var got dbus.ObjectPath
	if err := u.bus.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").CallWithContext(ctx,
		"org.freedesktop.systemd1.Manager.GetUnit", 0, name).Store(&got); err != nil {
		return fail(fmt.Errorf("its unit %s is gone: %w", name, err))
	}
	if got != path {
		return fail(fmt.Errorf("unit %s: unexpected object %s", name, got))
	}
	state, err := up.stringProp(ctx, "org.freedesktop.systemd1.Unit", "ActiveState")
	if err != nil || state != "active" {
		return fail(fmt.Errorf("its unit %s is not running (%q, %v)", name, state, err))
	}
	main, err := up.uint32Prop(ctx, systemd1.ServiceIface, "MainPID")
	if err != nil || int(main) != p.pid {
		return fail(fmt.Errorf("unit %s's main process is %d, not %d: not its shell (%v)", name, main, p.pid, err))
	}
	if err := u.bus.Object("org.freedesktop.systemd1", path).CallWithContext(ctx, "org.freedesktop.systemd1.Unit.Ref", 0).Err; err != nil {
		return fail(fmt.Errorf("systemd: keep %s: %w", name, err))
	}
	if cg, err := up.stringProp(ctx, systemd1.ServiceIface, "ControlGroup"); err == nil && cg != "" && u.mount != "" {
		p.cgroupDir = u.mount + cg
	}
	p.unit = up
	p.short = strings.TrimSuffix(strings.TrimPrefix(name, "tether-session-"), ".service")
	go up.watch(p)
	return nil
}

func (u *systemdUnits) forget(path dbus.ObjectPath) {
	u.mu.Lock()
	delete(u.watches, path)
	u.mu.Unlock()
}

// unitProc is one session's unit.
type unitProc struct {
	u     *systemdUnits
	name  string
	path  dbus.ObjectPath
	wake  chan struct{}
	match []dbus.MatchOption
}

func (up *unitProc) prop(ctx context.Context, iface, name string) (dbus.Variant, error) {
	return systemd1.Get(ctx, up.u.bus, up.path, iface, name)
}

func (up *unitProc) stringProp(ctx context.Context, iface, name string) (string, error) {
	v, err := up.prop(ctx, iface, name)
	if err != nil {
		return "", err
	}
	s, _ := v.Value().(string)
	return s, nil
}

func (up *unitProc) uint32Prop(ctx context.Context, iface, name string) (uint32, error) {
	v, err := up.prop(ctx, iface, name)
	if err != nil {
		return 0, err
	}
	n, _ := v.Value().(uint32)
	return n, nil
}

// result words how a unit that did not start ended.
func (up *unitProc) result(ctx context.Context) string {
	r, err := up.stringProp(ctx, systemd1.ServiceIface, "Result")
	if err != nil {
		return err.Error()
	}
	return "result " + r
}

// watch waits for the unit to end, then records how and closes Done.
// Every change signal of the unit wakes it; a slow poll is the backstop
// for a bus that lost a signal or went away.
func (up *unitProc) watch(p *Process) {
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	wake := up.wake
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		state, err := up.stringProp(ctx, systemd1.UnitIface, "ActiveState")
		if err == nil && (state == "inactive" || state == "failed") {
			limit, err := up.ending(ctx)
			p.limMu.Lock()
			p.limit, p.err = limit, err
			p.limMu.Unlock()
			cancel()
			break
		}
		cancel()
		if err != nil && !up.u.bus.Connected() {
			// No bus to ask: the shell's own end is all there is to see.
			if p.pid > 0 && syscall.Kill(p.pid, 0) == syscall.ESRCH {
				p.err = errors.New("ended (the system bus went away)")
				break
			}
		}
		select {
		case <-wake:
		case <-tick.C:
		}
	}
	up.release()
	close(p.done)
}

// ending reads how the unit's main process ended and why the unit did.
func (up *unitProc) ending(ctx context.Context) (limit string, err error) {
	const iface = systemd1.ServiceIface
	result, _ := up.stringProp(ctx, iface, "Result")
	codeV, err1 := up.prop(ctx, iface, "ExecMainCode")
	statusV, err2 := up.prop(ctx, iface, "ExecMainStatus")
	if result == "oom-kill" {
		limit = LimitMemory
	}
	code, _ := codeV.Value().(int32)
	status, _ := statusV.Value().(int32)
	if err1 != nil || err2 != nil {
		return limit, fmt.Errorf("ended, result %s", result)
	}
	if ok, err := systemd1.ExitStatus(code, status); ok {
		return limit, err
	}
	return limit, fmt.Errorf("ended, result %s", result)
}

// release drops the daemon's reference (systemd then collects the unit)
// and the watch.
func (up *unitProc) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = systemd1.Unref(ctx, up.u.bus, up.path)
	_ = up.u.bus.RemoveMatchSignalContext(ctx, up.match...)
	up.u.forget(up.path)
}

// stop asks systemd to stop the unit: SIGTERM and SIGHUP to all of its
// cgroup, SIGKILL after its stop timeout.
func (up *unitProc) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := systemd1.StopUnit(ctx, up.u.bus, up.name, "replace")
	var de dbus.Error
	if errors.As(err, &de) && de.Name == systemd1.ErrNoSuchUnit {
		return nil
	}
	return err
}

// kill sends SIGKILL to every process of the unit.
func (up *unitProc) kill() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return systemd1.KillUnit(ctx, up.u.bus, up.name, "all", syscall.SIGKILL)
}

// openPTY opens a pty master without opening its slave: the slave is
// first opened by the unit's shell (systemd), so the master reads EIO
// only once every holder of the terminal is gone, never before the
// shell has it.
func openPTY() (*os.File, string, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("pty number: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), "/dev/pts/" + strconv.FormatUint(uint64(n), 10), nil
}
