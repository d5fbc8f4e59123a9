package shell

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupBase is the cgroup v2 directory the daemon puts a leaf per session
// in, with the controllers its leaves get.
type cgroupBase struct {
	mount       string   // the cgroup2 mount point
	dir         string   // the sessions' parent directory
	created     bool     // dir was made by this daemon (removed at Close if empty)
	controllers []string // enabled for the leaves: of memory, pids, cpu
	kill        bool     // cgroup.kill exists (Linux 5.14)
	memMax      uint64   // resolved memory ceiling; MaxUint64 = none
	limits      Limits
	// ioSlots bounds the leaves' cgroupfs operations at once. They are
	// blocking system calls (rmdir of a leaf can wait in the kernel), and
	// each one in flight can hold an OS thread of its own: 300 sessions
	// stopped together took the daemon from 12 threads to 46.
	ioSlots chan struct{}
}

// cgroupIOSlots is how many leaf operations may be in flight at once.
const cgroupIOSlots = 2

// io waits for a slot for a cgroupfs operation; the caller calls what it
// returns when done. A base built without slots (tests) does not wait.
func (b *cgroupBase) io() func() {
	if b == nil || b.ioSlots == nil {
		return func() {}
	}
	b.ioSlots <- struct{}{}
	return func() { <-b.ioSlots }
}

// cgroup2Mount finds where the unified hierarchy is mounted ("" if not).
func cgroup2Mount(mountinfo string) string {
	f, err := os.Open(mountinfo)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		fs := strings.Fields(sc.Text())
		for i, w := range fs {
			if w == "-" && i+1 < len(fs) && fs[i+1] == "cgroup2" && len(fs) > 4 {
				return unescapeMount(fs[4])
			}
		}
	}
	return ""
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ownCgroup is the daemon's cgroup v2 path ("0::/path" in /proc/self/cgroup).
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// wantControllers are the ones a session's limits need.
var wantControllers = []string{"memory", "pids", "cpu"}

// probeCgroup finds or makes the sessions' subtree: beneath the root of
// the hierarchy when the daemon sits at the root (busybox init, most
// non-systemd systems), else beneath the daemon's own cgroup (a delegated
// unit, an OpenRC service's group, a container's namespace root), where
// the daemon first moves itself into a leaf of its own so that the
// controllers can be enabled for its siblings. Controllers that cannot be
// had are left out: the leaves still give whole-cgroup teardown.
func probeCgroup(mountinfo string, lim Limits) (*cgroupBase, error) {
	mnt := cgroup2Mount(mountinfo)
	if mnt == "" {
		return nil, errors.New("no cgroup v2 hierarchy is mounted")
	}
	own, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	if !kernelAtLeast(5, 7) {
		return nil, errors.New("the kernel is older than 5.7 and cannot start a process inside a cgroup (clone3 CLONE_INTO_CGROUP)")
	}
	parent := filepath.Join(mnt, own)
	if filepath.Base(parent) == "daemon" && isDir(filepath.Join(filepath.Dir(parent), "tether")) {
		// A daemon exec'd in place (tether upgrade) is in the leaf its
		// previous run moved it to: the subtree is its parent's, where
		// the kept sessions' leaves are (moving again would nest
		// deeper with each upgrade, and lose them).
		return setupBase(mnt, filepath.Dir(parent), "tether", lim)
	}
	if _, err := os.Stat(filepath.Join(parent, "cgroup.type")); err == nil {
		// Not the root: a cgroup with processes cannot give its children
		// controllers, so the daemon moves into a leaf of its own first.
		if err := moveSelf(parent); err != nil {
			return nil, err
		}
	}
	return setupBase(mnt, parent, "tether", lim)
}

// setupBase makes parent/name the sessions' directory, with every
// controller of wantControllers the parent can hand down enabled for the
// leaves.
func setupBase(mnt, parent, name string, lim Limits) (*cgroupBase, error) {
	b := &cgroupBase{mount: mnt, limits: lim, dir: filepath.Join(parent, name), ioSlots: make(chan struct{}, cgroupIOSlots)}
	if err := os.Mkdir(b.dir, 0o755); err == nil {
		b.created = true
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", b.dir, err)
	}
	avail := readWords(filepath.Join(parent, "cgroup.controllers"))
	for _, c := range wantControllers {
		if !contains(avail, c) {
			continue
		}
		// Enabled on the parent for tether/, and on tether/ for its leaves.
		if writeFile(filepath.Join(parent, "cgroup.subtree_control"), "+"+c) != nil {
			continue
		}
		if writeFile(filepath.Join(b.dir, "cgroup.subtree_control"), "+"+c) == nil {
			b.controllers = append(b.controllers, c)
		}
	}
	if _, err := os.Stat(filepath.Join(b.dir, "cgroup.kill")); err == nil {
		b.kill = true
	}
	if _, err := os.Stat(filepath.Join(b.dir, "cgroup.freeze")); err != nil && !b.kill {
		b.close()
		return nil, errors.New("the kernel has neither cgroup.kill nor cgroup.freeze")
	}
	b.memMax = lim.memoryBytes(totalRAM())
	b.removeStale()
	return b, nil
}

// moveSelf moves the daemon out of ownDir into ownDir/daemon, when it is
// alone there (its own subtree); otherwise the controllers stay off.
func moveSelf(ownDir string) error {
	procs := readWords(filepath.Join(ownDir, "cgroup.procs"))
	if len(procs) != 1 || procs[0] != strconv.Itoa(os.Getpid()) {
		// Others share the cgroup: leaves still work, without controllers
		// (the subtree_control writes below fail and say so).
		return nil
	}
	leaf := filepath.Join(ownDir, "daemon")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", leaf, err)
	}
	if err := writeFile(filepath.Join(leaf, "cgroup.procs"), "0"); err != nil {
		return fmt.Errorf("move the daemon into %s: %w", leaf, err)
	}
	return nil
}

// removeStale removes empty leaves a crashed daemon left; young ones may
// be another daemon's session being born. A leaf whose shell a restored
// session is about to adopt is never removed: it holds processes, and
// the kernel refuses to remove a populated cgroup (EBUSY).
func (b *cgroupBase) removeStale() {
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "session-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
			_ = os.Remove(filepath.Join(b.dir, e.Name())) // fails unless empty
		}
	}
}

// close removes the sessions' directory if this daemon made it and no
// leaf is left in it.
func (b *cgroupBase) close() {
	if b.created {
		_ = os.Remove(b.dir)
	}
}

// describe words the subtree for the start-up log line.
func (b *cgroupBase) describe() string {
	ctl := "no controllers: limits are not enforced"
	if len(b.controllers) > 0 {
		ctl = "controllers " + strings.Join(b.controllers, " ")
	}
	kill := "cgroup.kill"
	if !b.kill {
		kill = "freeze and kill"
	}
	return fmt.Sprintf("cgroup v2 leaves under %s (%s; teardown by %s)", b.dir, ctl, kill)
}

// leaf is one session's cgroup.
type leaf struct {
	dir string
	b   *cgroupBase
}

// newLeaf makes a session's cgroup with its limits, named after the
// session (a suffix when another daemon or session has the name).
func (b *cgroupBase) newLeaf(short string) (*leaf, error) {
	name := "session-" + short
	var dir string
	for i := 1; ; i++ {
		dir = filepath.Join(b.dir, name)
		if i > 1 {
			dir = fmt.Sprintf("%s-%d", dir, i)
		}
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || i >= 100 {
			return nil, fmt.Errorf("create session cgroup %s: %w", dir, err)
		}
	}
	l := &leaf{dir: dir, b: b}
	var errs []error
	set := func(ctl, file, value string) {
		if contains(b.controllers, ctl) {
			if err := writeFile(filepath.Join(dir, file), value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", file, err))
			}
		}
	}
	if b.memMax != math.MaxUint64 {
		set("memory", "memory.max", strconv.FormatUint(b.memMax, 10))
		// The whole session goes when it hits its ceiling, as a unit
		// does (OOMPolicy=stop): no half-killed pipeline is left.
		set("memory", "memory.oom.group", "1")
	}
	if b.limits.TasksMax > 0 {
		set("pids", "pids.max", strconv.FormatUint(uint64(b.limits.TasksMax), 10))
	}
	if b.limits.CPUWeight > 0 {
		set("cpu", "cpu.weight", strconv.FormatUint(uint64(b.limits.CPUWeight), 10))
	}
	if err := errors.Join(errs...); err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("session cgroup %s: %w", dir, err)
	}
	return l, nil
}

// adoptLeaf takes back the leaf of a shell from a previous run: dir must
// be a session leaf directly beneath this daemon's subtree (a record
// names no other cgroup), and pid must be in it, so that tearing the
// leaf down can only end what the session started.
func (b *cgroupBase) adoptLeaf(dir string, pid int) (*leaf, error) {
	clean := filepath.Clean(dir)
	if clean != dir || filepath.Dir(clean) != b.dir || !strings.HasPrefix(filepath.Base(clean), "session-") {
		return nil, fmt.Errorf("cgroup %q is not a session leaf beneath %s", logClip(dir), b.dir)
	}
	b2, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, fmt.Errorf("the shell's cgroup: %w", err)
	}
	var in string
	for _, line := range strings.Split(string(b2), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			in = p
		}
	}
	if filepath.Join(b.mount, in) != clean {
		return nil, fmt.Errorf("pid %d is not in cgroup %s (it is in %q): not its shell", pid, clean, logClip(in))
	}
	return &leaf{dir: clean, b: b}, nil
}

// logClip bounds a string read from a record or /proc for a log line.
func logClip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// open returns a descriptor of the leaf for clone3's CLONE_INTO_CGROUP.
func (l *leaf) open() (int, error) {
	fd, err := unix.Open(l.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", l.dir, err)
	}
	return fd, nil
}

// pids lists the processes in the leaf.
func (l *leaf) pids() []int {
	defer l.b.io()()
	return l.pidsLocked()
}

// pidsLocked is pids for a caller that holds an io slot.
func (l *leaf) pidsLocked() []int {
	var out []int
	for _, w := range readWords(filepath.Join(l.dir, "cgroup.procs")) {
		if p, err := strconv.Atoi(w); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// empty says whether no process is left in the leaf (zombies included:
// they leave the cgroup when they exit).
func (l *leaf) empty() bool {
	done := l.b.io()
	b, err := os.ReadFile(filepath.Join(l.dir, "cgroup.events"))
	done()
	if err != nil {
		return len(l.pids()) == 0
	}
	return strings.Contains(string(b), "populated 0")
}

// signal sends sig to every process in the leaf.
func (l *leaf) signal(sig syscall.Signal) int {
	ps := l.pids()
	for _, p := range ps {
		_ = syscall.Kill(p, sig)
	}
	return len(ps)
}

// killAll ends every process in the leaf, however it forked or set up
// its sessions: cgroup.kill where the kernel has it; else the leaf is
// frozen (no process can fork meanwhile), each one listed is killed, and
// the leaf thawed so the kills take effect.
func (l *leaf) killAll() error {
	defer l.b.io()()
	if l.b.kill {
		return writeFile(filepath.Join(l.dir, "cgroup.kill"), "1")
	}
	freeze := filepath.Join(l.dir, "cgroup.freeze")
	if err := writeFile(freeze, "1"); err != nil {
		return err
	}
	for i := 0; i < 100; i++ {
		b, _ := os.ReadFile(filepath.Join(l.dir, "cgroup.events"))
		if strings.Contains(string(b), "frozen 1") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for _, p := range l.pidsLocked() {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	return writeFile(freeze, "0")
}

// limitHit reads what the kernel counted against the leaf's limits: the
// memory limit's kills, and how often forks hit the task ceiling.
func (l *leaf) limitHit() (oomKills, forkFails uint64) {
	defer l.b.io()()
	oomKills = eventCount(filepath.Join(l.dir, "memory.events"), "oom_kill")
	if g := eventCount(filepath.Join(l.dir, "memory.events"), "oom_group_kill"); g > oomKills {
		oomKills = g
	}
	forkFails = eventCount(filepath.Join(l.dir, "pids.events"), "max")
	return oomKills, forkFails
}

// remove deletes the leaf once empty; the kernel may take a moment after
// the last process exited.
func (l *leaf) remove() error {
	var err error
	for i := 0; i < 50; i++ {
		done := l.b.io()
		err = os.Remove(l.dir)
		done()
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("remove session cgroup: %w", err)
}

// usage reads a cgroup's memory in use and CPU time used so far.
func cgroupUsage(dir string) (mem uint64, cpu time.Duration, ok bool) {
	if b, err := os.ReadFile(filepath.Join(dir, "memory.current")); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			mem, ok = v, true
		}
	}
	if v := eventCount(filepath.Join(dir, "cpu.stat"), "usage_usec"); v > 0 {
		cpu, ok = time.Duration(v)*time.Microsecond, true
	}
	return mem, cpu, ok
}

// eventCount reads "key value" from a flat-keyed cgroup file.
func eventCount(path, key string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func readWords(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var ma, mi int
	if _, err := fmt.Sscanf(rel, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}
