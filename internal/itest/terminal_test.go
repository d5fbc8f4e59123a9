package itest

import (
	"fmt"
	"strings"
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
