package shell

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/systemd1"
	"github.com/tether-agent/tether/internal/tstest/dbustest"
)

// fakeStartManager is systemd's manager as far as a start job goes: it
// announces the job's end (JobRemoved) before it answers the start call,
// as systemd can when a job ends at once, so the starter sees the signal
// before it knows the job's path.
type fakeStartManager struct {
	conn   *dbus.Conn
	mu     sync.Mutex
	jobs   uint32
	result string
	props  map[string]dbus.Variant
}

type fakeAux struct {
	Name  string
	Props []systemd1.Property
}

func (f *fakeStartManager) StartTransientUnit(name, mode string, props []systemd1.Property, _ []fakeAux) (dbus.ObjectPath, *dbus.Error) {
	f.mu.Lock()
	f.jobs++
	id, result := f.jobs, f.result
	f.props = map[string]dbus.Variant{}
	for _, p := range props {
		f.props[p.Name] = p.Value
	}
	f.mu.Unlock()
	job := dbus.ObjectPath("/org/freedesktop/systemd1/job/" + string(rune('0'+id)))
	_ = f.conn.Emit(systemd1.Path, systemd1.Manager+".JobRemoved", id, job, name, result)
	return job, nil
}

// A start job's result reaches its starter even when JobRemoved comes
// before the start call's answer, and the properties arrive with the
// types systemd reads.
func TestStartJobResult(t *testing.T) {
	addr := dbustest.Start(t)
	srv, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	f := &fakeStartManager{conn: srv}
	if err := srv.Export(f, systemd1.Path, systemd1.Manager); err != nil {
		t.Fatal(err)
	}
	if r, err := srv.RequestName(systemd1.Service, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s: %v %v", systemd1.Service, r, err)
	}
	bus, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	if err := bus.AddMatchSignal(systemd1.MatchJobRemoved()...); err != nil {
		t.Fatal(err)
	}
	u := &systemdUnits{bus: bus, watches: make(map[dbus.ObjectPath]chan struct{}),
		sigs: make(chan *dbus.Signal, 64), jobs: make(map[dbus.ObjectPath]chan<- string)}
	bus.Signal(u.sigs)
	go u.dispatch()

	acct := &Account{Name: "alice", UID: 1000, GID: 100, Home: "/"}
	props := unitProperties(Spec{Command: "/bin/sh", Account: acct}, "/dev/pts/7", Limits{}, 1<<20, time.Second)
	for _, want := range []string{"done", "failed", "done"} {
		f.mu.Lock()
		f.result = want
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		job := make(chan string, 1)
		if err := u.start(ctx, "tether-session-x.service", props, job); err != nil {
			cancel()
			t.Fatal(err)
		}
		select {
		case got := <-job:
			if got != want {
				t.Errorf("job result %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no job result (want %q)", want)
		}
		cancel()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v := f.props["ExecStart"]; v.Signature().String() != "a(sasb)" {
		t.Errorf("ExecStart arrived as %s", v.Signature())
	}
	if v, _ := f.props["TTYPath"].Value().(string); v != "/dev/pts/7" {
		t.Errorf("TTYPath arrived as %q", v)
	}
	u.jobMu.Lock()
	defer u.jobMu.Unlock()
	if len(u.jobs) != 0 {
		t.Errorf("%d jobs left registered", len(u.jobs))
	}
}
