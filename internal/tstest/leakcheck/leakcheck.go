// Package leakcheck fails a test binary whose tests leave goroutines
// running. Use it from TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests and then waits up to three seconds for the goroutine
// count to settle back to what it was before; if it does not, it prints
// every goroutine's stack and exits non-zero.
func Main(m *testing.M) {
	before := count()
	code := m.Run()
	if code == 0 {
		if err := Settled(before, 3*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// Settled waits up to d for at most want goroutines to be running.
func Settled(want int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		n := count()
		if n <= want {
			return nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("goroutine leak: %d running, %d before the tests\n%s", n, want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// permanent are goroutines the runtime starts once and never ends; they
// are not leaks of the code under test.
var permanent = []string{"os/signal.loop"}

// count is the number of goroutines, the runtime's permanent ones aside.
func count() int { return len(Stacks()) }

// Stacks is the stack of every goroutine running now, the runtime's
// permanent ones aside, as runtime.Stack prints them.
func Stacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.TrimSpace(g) == "" || isPermanent(g) {
			continue
		}
		out = append(out, g)
	}
	return out
}

func isPermanent(g string) bool {
	for _, p := range permanent {
		if strings.Contains(g, p) {
			return true
		}
	}
	return false
}

// Count is the number of goroutines running now, the runtime's permanent
// ones aside: a test's baseline for Settled.
func Count() int { return count() }
