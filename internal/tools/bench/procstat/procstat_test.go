package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// A process that blocks and wakes shows its switches and CPU.
func TestReadCountsSwitchesAndCPU(t *testing.T) {
	a, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	for i := 0; i < 20; i++ {
		time.Sleep(time.Millisecond) // a voluntary switch each
	}
	for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
	}
	runtime.UnlockOSThread()
	b, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := b.Switches - a.Switches; d < 20 {
		t.Errorf("%d switches for 20 sleeps", d)
	}
	if d := b.CPU - a.CPU; d < 15*time.Millisecond {
		t.Errorf("%v CPU for 20 ms of spinning", d)
	}
	if r := Between(a, b); r.WakeupsPerSec <= 0 || r.CPUPerMinute <= 0 {
		t.Errorf("Between = %+v", r)
	}
}

func TestReadMissingProcess(t *testing.T) {
	if _, err := Read(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
