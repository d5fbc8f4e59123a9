package identity

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The thread that does a file operation carries exactly the account's
// filesystem ids and supplementary groups, ids above 16 bits included (on 386 and
// 32-bit arm only the *32 system calls take them), and no capability:
// CAP_SYS_RESOURCE would let it use root's reserved blocks and ignore
// quotas. Both ways of running work (one-shot and a held thread).
func TestIdentityOnItsThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("switching identities needs root; CI runs the tests as root")
	}
	tests := []struct {
		name string
		id   Identity
		want map[string]string // /proc/thread-self/status field → value
	}{
		{"nobody without groups", Identity{Name: "nobody", UID: 65534, GID: 65534},
			map[string]string{"Uid": "0\t0\t0\t65534", "Gid": "0\t0\t0\t65534", "Groups": "",
				"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapAmb": "0000000000000000"}},
		{"ids and groups above 16 bits", Identity{Name: "wide", UID: 100000, GID: 100001, Groups: []uint32{70000, 5, 100002}},
			map[string]string{"Uid": "0\t0\t0\t100000", "Gid": "0\t0\t0\t100001", "Groups": "5 70000 100002",
				"CapEff": "0000000000000000", "CapPrm": "0000000000000000"}},
	}
	for _, tt := range tests {
		for _, held := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/held=%v", tt.name, held), func(t *testing.T) {
				var status string
				read := func() error {
					b, err := os.ReadFile("/proc/thread-self/status")
					status = string(b)
					return err
				}
				var err error
				if held {
					var th *Thread
					if th, err = tt.id.Start(); err != nil {
						t.Fatal(err)
					}
					err = th.Do(read)
					th.Close()
				} else {
					err = tt.id.Do(read)
				}
				if err != nil {
					t.Fatal(err)
				}
				for k, want := range tt.want {
					if got := statusField(status, k); got != want {
						t.Errorf("%s: %q, want %q", k, got, want)
					}
				}
				// Every other goroutine keeps root's rights, whatever thread
				// it runs on: the switched thread is never reused.
				for i := 0; i < 20; i++ {
					ch := make(chan string, 1)
					go func() {
						b, _ := os.ReadFile("/proc/thread-self/status")
						ch <- statusField(string(b), "Uid")
					}()
					if got := <-ch; got != "0\t0\t0\t0" {
						t.Fatalf("another goroutine runs with Uid %q", got)
					}
				}
			})
		}
	}
}

// TestHeldThreadEnds: a thread held for an upload is gone once closed;
// the process has no thread left with the account's ids.
func TestHeldThreadEnds(t *testing.T) {
	id := nobody(t)
	for i := 0; i < 20; i++ {
		th, err := id.Start()
		if err != nil {
			t.Fatal(err)
		}
		if err := th.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		th.Close()
	}
	var left []string
	eventually(t, 5*time.Second, "no thread left as nobody", func() bool {
		left = nil
		tasks, _ := filepath.Glob("/proc/self/task/*/status")
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			if uid := statusField(string(b), "Uid"); uid != "0\t0\t0\t0" {
				left = append(left, f+" "+uid)
			}
		}
		return len(left) == 0
	})
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkIdentity compares switching a fresh thread for each 4 KiB
// write with handing the write to a thread held for the transfer.
func BenchmarkIdentity(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root")
	}
	id := &Identity{Name: "nobody", UID: 65534, GID: 65534}
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	write := func() error {
		_, err := f.WriteAt(buf, 0)
		return err
	}
	// CPU time of the whole process (all threads) per write: on a busy
	// machine the wall time is mostly waiting for a CPU.
	cpu := func(b *testing.B, loop func()) {
		var r0, r1 unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_SELF, &r0)
		loop()
		_ = unix.Getrusage(unix.RUSAGE_SELF, &r1)
		ns := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano())
		b.ReportMetric(float64(ns)/float64(b.N), "cpu-ns/op")
	}
	b.Run("root", func(b *testing.B) {
		cpu(b, func() {
			for i := 0; i < b.N; i++ {
				_ = write()
			}
		})
	})
	b.Run("switch-per-write", func(b *testing.B) {
		cpu(b, func() {
			for i := 0; i < b.N; i++ {
				_ = id.Do(write)
			}
		})
	})
	b.Run("held-thread", func(b *testing.B) {
		th, err := id.Start()
		if err != nil {
			b.Fatal(err)
		}
		defer th.Close()
		cpu(b, func() {
			for i := 0; i < b.N; i++ {
				_ = th.Do(write)
			}
		})
	})
}

func statusField(status, key string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "<missing>"
}

// TestSwitchedThreadNotSignalable: the account cannot signal the thread
// that works as it (kill(2) checks the target thread's real and saved
// uids, and a SIGKILL or SIGSTOP to one thread takes the whole daemon):
// only the filesystem ids are the account's, the others stay root's.
func TestSwitchedThreadNotSignalable(t *testing.T) {
	id := nobody(t)
	th, err := id.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	var tid int
	_ = th.Do(func() error { tid = unix.Gettid(); return nil })
	cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("kill -0 %d", tid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the account may signal the thread switched to it (tid %d)", tid)
	}
	if !strings.Contains(strings.ToLower(string(out)), "not permitted") {
		t.Errorf("kill -0 as the account: %v %s", err, out)
	}
}

func nobody(t *testing.T) *Identity {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test switches identity and must run as root (CI does)")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &Identity{Name: "nobody", UID: uint32(uid), GID: uint32(gid)}
}
