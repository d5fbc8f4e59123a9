package itest

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestEchoResizeStop(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	term := e.open(adminEmail)
	out := e.run(term, "echo hello-$((6*7))")
	if !strings.Contains(out, "hello-42") {
		t.Fatalf("echo: %q", out)
	}
	if err := term.Resize(132, 43); err != nil {
		t.Fatal(err)
	}
	if out := e.run(term, "stty size"); !strings.Contains(out, "43 132") {
		t.Fatalf("resize not reflected by stty size: %q", out)
	}
	out = e.run(term, "id -un")
	if !strings.Contains(out, shellUser(t)) {
		t.Fatalf("shell runs as the wrong user: %q", out)
	}
	// A background job that ignores HUP and TERM must still be gone.
	e.run(term, "(trap '' HUP TERM; exec sleep 311) &")
	eventually(t, 5*time.Second, "background job", func() bool { live, _ := e.children(); return len(live) == 1 && processExists("sleep 311") })
	if err := term.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "session gone", func() bool {
		live, zombies := e.children()
		return len(live) == 0 && len(zombies) == 0 && !processExists("sleep 311")
	})
}

func TestShellExitSendsStopAndFreesSlot(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	term := e.open(adminEmail)
	fmt.Fprintf(term, "exit 7\n")
	if body := e.waitStop(term); !strings.Contains(body, "exit status 7") {
		t.Fatalf("stop body %q", body)
	}
	// MaxPerUser is 1: a new session for the same user works only if the
	// slot was freed.
	term2 := e.open(adminEmail)
	e.run(term2, "true")
	eventually(t, 5*time.Second, "no zombie", func() bool { _, z := e.children(); return len(z) == 0 })
}

// A paste bigger than upstream's 8 KiB message limit arrives whole and the
// link stays up.
func TestLargePaste(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	term := e.open(adminEmail)
	e.run(term, "stty -icanon -echo")
	const n = 100000
	fmt.Fprintf(term, "head -c %d | wc -c\n", n)
	time.Sleep(200 * time.Millisecond) // let head start reading
	if _, err := term.Write([]byte(strings.Repeat("p", n))); err != nil {
		t.Fatal(err)
	}
	e.expect(term, fmt.Sprint(n))
	e.run(term, "stty sane")
	if c := e.srv.DeviceConnects(e.deviceID); c != 1 {
		t.Fatalf("link reconnected %d times", c-1)
	}
}

// SIGUSR1 logs a status report listing the sessions, as upstream does.
func TestStatusReportOnSIGUSR1(t *testing.T) {
	e := newEnv(t, nil)
	e.waitDevice()
	term := e.open(adminEmail)
	e.run(term, "true")
	if err := e.daemon.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "status report with the session", func() bool {
		return strings.Contains(e.log.String(), "status report: session") && strings.Contains(e.log.String(), term.SID())
	})
}
