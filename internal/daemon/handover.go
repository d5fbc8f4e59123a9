package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/handover"
	"github.com/tether-agent/tether/internal/logging"
	"github.com/tether-agent/tether/internal/proto"
	"github.com/tether-agent/tether/internal/proto/terminal"
	"github.com/tether-agent/tether/internal/session"
	"github.com/tether-agent/tether/internal/shell"
)

// keeper keeps each shell session's record and pty master for the next run
// (terminal.Keeper): the record in the runtime directory's sessions/, the
// master in systemd's descriptor store when there is one.
type keeper struct {
	dir   *handover.Dir
	store handover.FDStore
	log   *slog.Logger

	mu   sync.Mutex
	pids map[string]int // key → shell pid, of the sessions kept now
	warn logging.RateLimit
}

func newKeeper(dir *handover.Dir, store handover.FDStore, log *slog.Logger) *keeper {
	return &keeper{dir: dir, store: store, log: log, pids: make(map[string]int)}
}

// Keep implements terminal.Keeper.
func (k *keeper) Keep(s terminal.KeptSession) string {
	key := s.Key
	if key == "" {
		key = handover.Key(s.Pid, s.Started)
	}
	err := k.dir.Write(handover.Record{Key: key, SessionID: s.SessionID, UserID: s.UserID, Pid: s.Pid,
		Unit: s.Held.Unit, Cgroup: s.Held.Cgroup, Started: s.Started, Cols: s.Cols, Rows: s.Rows})
	if err == nil {
		err = k.store.Put(key, s.Master)
	}
	if err != nil {
		if k.warn.Allow(time.Now()) {
			k.log.Warn("session not kept for a restart: it will end with the daemon", "session_id", logging.Clip(s.SessionID),
				"error", err, "suppressed", k.warn.TakeSuppressed())
		}
		_ = k.dir.Remove(key)
		return ""
	}
	k.mu.Lock()
	k.pids[key] = s.Pid
	k.mu.Unlock()
	return key
}

// Forget implements terminal.Keeper.
func (k *keeper) Forget(key string) {
	_ = k.dir.Remove(key)
	_ = k.store.Remove(key)
	k.mu.Lock()
	delete(k.pids, key)
	k.mu.Unlock()
}

// outliveService says there are shells kept and every one runs outside
// the daemon's service's cgroup, so that systemd, restarting the service,
// does not kill it with the daemon. Shells that are the daemon's children
// share its cgroup, and cgroup leaves (Sessions.Containment cgroup) sit
// beneath it: systemd kills the whole subtree. Shells in units of their
// own do not.
func (k *keeper) outliveService() bool {
	own, ok := cgroupOf("self")
	if !ok {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.pids) == 0 {
		return false // nothing to keep: a plain stop
	}
	for _, pid := range k.pids {
		cg, ok := cgroupOf(strconv.Itoa(pid))
		if ok && within(cg, own) {
			return false
		}
	}
	return true
}

// cgroupOf reads a process's cgroup v2 path (the "0::" line).
func cgroupOf(pid string) (string, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, true
		}
	}
	return "", false
}

// within says cgroup cg is the daemon's own (own) or beneath its
// service's: the daemon's cgroup, or its parent when the daemon moved
// into a "daemon" leaf to give the sessions' leaves controllers.
func within(cg, own string) bool {
	if cg == own {
		return true
	}
	service := own
	if path.Base(own) == "daemon" {
		service = path.Dir(own)
	}
	if service == "/" {
		return false // the daemon is no service's (no systemd): only its own cgroup is shared
	}
	return cg == service || strings.HasPrefix(cg, service+"/")
}

// writeHandedOver rewrites the records of the sessions handed over with
// their clocks and replay buffers, and returns their masters by name.
func (k *keeper) writeHandedOver(hs []proto.HandedOver) []handover.NamedFile {
	var files []handover.NamedFile
	if k == nil {
		return nil
	}
	for _, h := range hs {
		kept, ok := h.State.(*terminal.Kept)
		if !ok || kept.Key == "" {
			continue
		}
		rec := handover.Record{Key: kept.Key, SessionID: h.SessionID, UserID: h.UserID, Pid: kept.Pid,
			Unit: kept.Held.Unit, Cgroup: kept.Held.Cgroup, Started: h.Created,
			Cols: kept.Cols, Rows: kept.Rows, HandedOver: true, Detached: h.Detached,
			IdleLeft: h.IdleLeft, AbsoluteLeft: h.AbsoluteLeft, DetachedLeft: h.DetachedLeft, Ring: kept.Ring}
		if err := k.dir.Write(rec); err != nil {
			k.log.Error("session record not written: the next run cannot take the session back", "session_id",
				logging.Clip(h.SessionID), "error", err)
			continue
		}
		files = append(files, handover.NamedFile{Name: kept.Key, File: kept.Master})
	}
	return files
}

// closeHandedOver lets go of this run's hold on the handed over ptys.
func closeHandedOver(hs []proto.HandedOver) {
	for _, h := range hs {
		if kept, ok := h.State.(*terminal.Kept); ok {
			kept.Close()
		}
	}
}

// restore takes back the sessions the previous run left, detached for their
// users, and returns how many it restored. files are the descriptors
// passed to this run.
func restore(log *slog.Logger, dir *handover.Dir, store handover.FDStore, files []handover.NamedFile,
	term *terminal.Protocol, router *session.Router, detachedTimeout time.Duration) int {
	if dir == nil || term == nil || detachedTimeout <= 0 {
		// Nothing can wait for its user: whatever the previous run left
		// is dropped (and its shells get their hangup as the masters
		// close).
		why := "the terminal is disabled"
		switch {
		case dir == nil:
			why = "no session records directory"
		case term != nil:
			why = "Sessions.DetachedTimeout is 0"
		}
		for _, f := range files {
			log.Warn("previous run: descriptor not restored", "event", "restore_dropped", "name", logging.Clip(f.Name), "reason", why)
			f.File.Close()
			_ = store.Remove(f.Name)
		}
		if dir != nil {
			for _, s := range handover.Collect(dir, nil, store, handover.Checks{}, log) {
				s.Master.Close()
			}
		}
		return 0
	}
	n := 0
	for _, s := range handover.Collect(dir, files, store, handover.Checks{}, log) {
		rs := terminal.RestoredShell{Key: s.Key, Pid: s.Pid, Master: s.Master, Ring: s.Ring,
			Held:     shell.Held{Unit: s.Unit, Cgroup: s.Cgroup},
			Restored: proto.Restored{SessionID: s.SessionID, UserID: s.UserID, Created: s.Started}}
		if s.HandedOver {
			// The clocks are exact; after a crash the idle clock starts
			// over (the record does not see keystrokes) and the detached
			// one runs whole.
			rs.IdleLeft = s.IdleLeft
			if s.Detached {
				rs.DetachedLeft = s.DetachedLeft
			}
		}
		if err := term.Restore(router, rs); err != nil {
			log.Warn("previous run: session not restored", "event", "restore_dropped", "name", s.Key,
				"session_id", logging.Clip(s.SessionID), "user_id", logging.Clip(s.UserID), "reason", err.Error())
			_ = dir.Remove(s.Key)
			_ = store.Remove(s.Key)
			continue
		}
		n++
	}
	return n
}

// restartRequested asks systemd whether the job that is stopping the
// daemon's unit is a restart (systemctl restart, try-restart,
// reload-or-restart) rather than a stop: only a restart keeps the
// sessions. Any doubt (no bus, no job, a slow answer) means stop.
func restartRequested(log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		log.Warn("cannot ask systemd whether this is a restart; ending the sessions", "error", err)
		return false
	}
	defer conn.Close()
	const dest = "org.freedesktop.systemd1"
	var unit dbus.ObjectPath
	if err := conn.Object(dest, "/org/freedesktop/systemd1").CallWithContext(ctx,
		"org.freedesktop.systemd1.Manager.GetUnitByPID", 0, uint32(os.Getpid())).Store(&unit); err != nil {
		log.Warn("cannot ask systemd whether this is a restart; ending the sessions", "error", err)
		return false
	}
	v, err := conn.Object(dest, unit).GetProperty("org.freedesktop.systemd1.Unit.Job")
	if err != nil {
		log.Warn("cannot ask systemd whether this is a restart; ending the sessions", "error", err)
		return false
	}
	var job struct {
		ID   uint32
		Path dbus.ObjectPath
	}
	if err := dbus.Store([]interface{}{v.Value()}, &job); err != nil || job.ID == 0 {
		return false // no job: a kill, not systemctl
	}
	t, err := conn.Object(dest, job.Path).GetProperty("org.freedesktop.systemd1.Job.JobType")
	if err != nil {
		return false
	}
	jt, _ := t.Value().(string)
	log.Debug("the unit's job", "type", jt)
	return jt == "restart" || jt == "try-restart" || jt == "reload-or-restart"
}

// checkUpgrade takes an upgrade request (tether upgrade PATH, or a bare
// SIGUSR2: self) and checks that the binary runs here: it must answer
// "version" within 10 s, so that a broken or foreign build never replaces
// a daemon that holds shells.
func checkUpgrade(ctx context.Context, dir *handover.Dir, self string, reaper *shell.Reaper) (string, error) {
	if dir == nil {
		return "", errors.New("no session records directory")
	}
	path, err := dir.TakeUpgrade(self)
	if err != nil {
		return "", err
	}
	if err := handover.CheckBinary(path); err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer null.Close()
	cmd := &exec.Cmd{Path: path, Args: []string{path, "version"}, Stdin: null, Stdout: null, Stderr: null,
		Env: []string{"PATH=" + shell.DefaultPath}}
	if err := reaper.Exec(cctx, cmd, func(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }); err != nil {
		return "", fmt.Errorf("new binary %s does not run here (%s version): %w", path, path, err)
	}
	return path, nil
}
