package itest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tether-agent/tether/internal/mockserver"
)

// newBrowser starts Debian's headless Chromium with a fresh profile (and
// extra options, if any) and returns a tab's context; the browser is gone
// when the test ends.
func newBrowser(t *testing.T, parent context.Context, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (scripts/setup.sh installs it): %v", err)
	}
	// The flags keep Chromium from reaching out to the network on its own
	// (updates, sync, QUIC probes): a closed network would only slow it.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1100, 680),
	}
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	// The CDP library predates this Chromium; events it cannot decode are
	// logged, not failures.
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...interface{}) {}))
	if err := chromedp.Run(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	proc := chromedp.FromContext(ctx).Browser.Process()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		// The allocator waits for the browser; make sure it is gone.
		if proc != nil && proc.Signal(syscall.Signal(0)) == nil {
			t.Errorf("chromium (pid %d) still running after the test", proc.Pid)
		}
	})
	return ctx
}

// browse runs actions with a timeout and fails the test on error.
func browse(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitJS waits until the expression is true in the page, polled by the
// browser itself; the caller's context bounds the wait.
func waitJS(expr string) chromedp.Action {
	return chromedp.Poll(expr, nil, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(0))
}

// consoleTerm drives one terminal tab of the web console.
type consoleTerm struct {
	t   *testing.T
	ctx context.Context
	n   int
}

func (c consoleTerm) panel() string { return fmt.Sprintf(`.panel[data-tab="%d"]`, c.n) }

// typeKeys types like a person: key events into xterm's input element,
// once the shell shows its prompt. Typed earlier, the terminal echoes the
// line at once and the shell prints its prompt only then, in front of the
// command's output ("$ 42"), so a test looking for the line "42" failed
// whenever a loaded machine started the shell slower than the test typed.
func (c consoleTerm) typeKeys(s string) {
	c.t.Helper()
	c.waitPrompt()
	browse(c.t, c.ctx, "type "+s,
		chromedp.Click(fmt.Sprintf(`.tab[data-tab="%d"] .tab-title`, c.n), chromedp.ByQuery),
		chromedp.Focus(c.panel()+" .xterm-helper-textarea", chromedp.ByQuery),
		typeText(s))
}

// typeText sends each character as the keyDown-with-text and keyUp a
// keyboard makes, as Puppeteer does. (chromedp's SendKeys adds a separate
// char event that the page cannot cancel, so xterm.js would see every key
// twice.)
func typeText(s string) chromedp.ActionFunc {
	return func(ctx context.Context) error {
		for _, r := range s {
			for _, ev := range kb.Encode(r) {
				switch ev.Type {
				case input.KeyChar:
					continue
				case input.KeyDown:
					if k, ok := kb.Keys[r]; ok && k.Print {
						ev.Text, ev.UnmodifiedText = k.Text, k.Unmodified
					} else if r == '\n' || r == '\r' {
						ev.Text, ev.UnmodifiedText = "\r", "\r"
					} else if unicode.IsPrint(r) {
						ev.Text, ev.UnmodifiedText = string(r), string(r)
					}
				}
				if err := ev.Do(ctx); err != nil {
					return fmt.Errorf("key %q: %w", r, err)
				}
			}
		}
		return nil
	}
}

// waitLine waits until the terminal's buffer has a line that is exactly
// want (after trimming), i.e. output, not the echo of the command.
func (c consoleTerm) waitLine(want string) {
	c.t.Helper()
	expr := fmt.Sprintf(`(tetherConsole.text(%d) || "").split("\n").some(l => l.trim() === %q)`, c.n, want)
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, waitJS(expr)); err != nil {
		var text string
		_ = chromedp.Run(c.ctx, chromedp.Evaluate(fmt.Sprintf(`tetherConsole.text(%d)`, c.n), &text))
		c.t.Fatalf("terminal %d: no line %q: %v; buffer:\n%s", c.n, want, err, text)
	}
}

// waitPrompt waits until the terminal's last line ends in the shell's
// prompt ($ or #): the shell waits for input.
func (c consoleTerm) waitPrompt() {
	c.t.Helper()
	expr := fmt.Sprintf(`/[$#]\s*$/.test(tetherConsole.text(%d) || "")`, c.n)
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, waitJS(expr)); err != nil {
		var text string
		_ = chromedp.Run(c.ctx, chromedp.Evaluate(fmt.Sprintf(`tetherConsole.text(%d)`, c.n), &text))
		c.t.Fatalf("terminal %d: no prompt: %v; buffer:\n%s", c.n, err, text)
	}
}

func (c consoleTerm) waitState(state string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, waitJS(fmt.Sprintf(`tetherConsole.status(%d)?.state === %q`, c.n, state))); err != nil {
		var st map[string]string
		_ = chromedp.Run(c.ctx, chromedp.Evaluate(fmt.Sprintf(`tetherConsole.status(%d)`, c.n), &st))
		c.t.Fatalf("terminal %d: not %s: %v; status %v", c.n, state, err, st)
	}
	// What a person reads: the status line's text.
	var text string
	browse(c.t, c.ctx, "read status line", chromedp.Text(c.panel()+" .status-text", &text, chromedp.ByQuery))
	return text
}

func (c consoleTerm) size() (cols, rows int) {
	c.t.Helper()
	var sz struct{ Cols, Rows int }
	browse(c.t, c.ctx, "terminal size", chromedp.Evaluate(fmt.Sprintf(`tetherConsole.size(%d)`, c.n), &sz))
	return sz.Cols, sz.Rows
}

// launch clicks "Launch a new terminal" on the device and returns its tab.
func launch(t *testing.T, ctx context.Context, deviceID string) consoleTerm {
	t.Helper()
	var before []int
	browse(t, ctx, "list terminals", chromedp.Evaluate(`tetherConsole.terminals()`, &before))
	browse(t, ctx, "launch a terminal",
		chromedp.Click(fmt.Sprintf(`.device[data-device=%q] button.launch`, deviceID), chromedp.ByQuery))
	var after []int
	browse(t, ctx, "list terminals", chromedp.Evaluate(`tetherConsole.terminals()`, &after))
	if len(after) != len(before)+1 {
		t.Fatalf("terminals before %v, after %v", before, after)
	}
	return consoleTerm{t: t, ctx: ctx, n: after[len(after)-1]}
}

func artifactDir(t *testing.T) string {
	dir := os.Getenv("TETHER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "build", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBrowserConsole drives the mock server's web console in a real
// headless Chromium against the real daemon: log in, open terminals, type,
// resize, hit the session limit, close one terminal.
func TestBrowserConsole(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"MaxPerUser": 2, "StopGrace": "200ms"},
	})
	e.waitDevice()
	ctx := newBrowser(t, e.ctx)

	// The login form comes with the demo user's e-mail filled in, never a
	// password: a page that reaches the server must not learn it.
	var email, password string
	browse(t, ctx, "open the console",
		chromedp.Navigate(e.url+"/"),
		chromedp.WaitVisible("#login", chromedp.ByID),
		chromedp.Value("#email", &email, chromedp.ByID),
		chromedp.Value("#password", &password, chromedp.ByID))
	if email != adminEmail || password != "" {
		t.Fatalf("login form filled with %q / %q", email, password)
	}
	// A wrong password is refused in words.
	var loginErr string
	browse(t, ctx, "log in with a wrong password",
		chromedp.SetValue("#password", "wrong", chromedp.ByID),
		chromedp.Click("#login button", chromedp.ByQuery),
		waitJS(`document.querySelector("#login-error").textContent !== ""`),
		chromedp.Text("#login-error", &loginErr, chromedp.ByID))
	if !strings.Contains(loginErr, "wrong e-mail or password") {
		t.Fatalf("login error %q", loginErr)
	}
	// The device list shows the device as connected.
	row := fmt.Sprintf(`.device[data-device=%q]`, e.deviceID)
	var status string
	browse(t, ctx, "log in",
		chromedp.SetValue("#password", adminPass, chromedp.ByID),
		chromedp.Click("#login button", chromedp.ByQuery),
		chromedp.WaitVisible(row+`[data-status="connected"] button.launch:not([disabled])`, chromedp.ByQuery),
		chromedp.Text(row+" .device-status", &status, chromedp.ByQuery))
	if status != "connected" {
		t.Fatalf("device status %q", status)
	}

	// A shell, typed into.
	t1 := launch(t, ctx, e.deviceID)
	if st := t1.waitState("connected"); !strings.HasPrefix(st, "Connected") {
		t.Fatalf("status line %q", st)
	}
	t1.typeKeys("echo $((6*7))\n")
	t1.waitLine("42")

	// The terminal follows the window, and the shell the terminal.
	cols0, rows0 := t1.size()
	browse(t, ctx, "resize the window", chromedp.EmulateViewport(1280, 820))
	browse(t, ctx, "terminal follows", waitJS(fmt.Sprintf(`(s => s.cols > %d && s.rows > %d)(tetherConsole.size(%d))`, cols0, rows0, t1.n)))
	cols, rows := t1.size()
	t1.typeKeys("stty size\n")
	t1.waitLine(fmt.Sprintf("%d %d", rows, cols))
	t.Logf("terminal %dx%d, resized to %dx%d", cols0, rows0, cols, rows)

	// Up to the limit, then the device's refusal on the page.
	t2 := launch(t, ctx, e.deviceID)
	t2.waitState("connected")
	t3 := launch(t, ctx, e.deviceID)
	if st := t3.waitState("refused"); !strings.Contains(st, "user has too many open sessions") {
		t.Fatalf("refused session's status line %q", st)
	}

	// A live terminal, beside the other two tabs, for the README and the
	// test's artifacts.
	t1.typeKeys("uname -s; id -un; echo $TERM\n")
	t1.waitLine(shellUser(t))
	var png []byte
	browse(t, ctx, "screenshot", chromedp.CaptureScreenshot(&png))
	shot := filepath.Join(artifactDir(t), "console.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// Closing one terminal ends its shell, down to a stubborn background
	// job, and leaves the other one alone.
	t1.typeKeys("(trap '' HUP TERM; exec sleep 3131) &\n")
	eventually(t, 10*time.Second, "background job in terminal 1", func() bool { return processExists("sleep 3131") })
	browse(t, ctx, "close terminal 1",
		chromedp.Click(fmt.Sprintf(`.tab[data-tab="%d"] .tab-close`, t1.n), chromedp.ByQuery))
	eventually(t, 10*time.Second, "terminal 1's shell gone", func() bool {
		live, zombies := e.children()
		return len(live) == 1 && len(zombies) == 0 && !processExists("sleep 3131")
	})
	t2.typeKeys("echo still-$((2+3))\n")
	t2.waitLine("still-5")

	// The shell's own end is told in words too.
	t2.typeKeys("exit 3\n")
	if st := t2.waitState("ended"); !strings.Contains(st, "shell exited: exit status 3") {
		t.Fatalf("status line after exit %q", st)
	}
	eventually(t, 10*time.Second, "no shell left", func() bool {
		live, zombies := e.children()
		return len(live) == 0 && len(zombies) == 0
	})
}

// openConsole starts a browser, logs in through a one-time login link (as
// `make demo` prints it) and waits for the device to show as connected.
func openConsole(t *testing.T, e *env, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	ctx := newBrowser(t, e.ctx, extra...)
	link, err := e.srv.LoginLink(adminEmail)
	if err != nil {
		t.Fatal(err)
	}
	browse(t, ctx, "log in",
		chromedp.Navigate(e.url+link),
		chromedp.WaitVisible(fmt.Sprintf(`.device[data-device=%q][data-status="connected"] button.launch:not([disabled])`, e.deviceID), chromedp.ByQuery))
	return ctx
}

// Every way a session ends is told on the page in words, with the
// device's (or the server's) own text.
func TestBrowserSessionEnd(t *testing.T) {
	tests := []struct {
		name     string
		sessions map[string]interface{}
		end      func(d *mockserver.Device, term consoleTerm)
		want     string
	}{
		{"shell exits", nil,
			func(_ *mockserver.Device, term consoleTerm) { term.typeKeys("exit 3\n") },
			"Session ended: shell exited: exit status 3"},
		{"idle expiry", map[string]interface{}{"ExpireAfterIdle": 1},
			func(*mockserver.Device, consoleTerm) {},
			"Session ended: session expired: idle for 1s"},
		// The real server closes the user's socket with 1011 and says
		// nothing else (PROTOCOL.md 2.9.1).
		{"device drops off", nil,
			func(d *mockserver.Device, _ consoleTerm) { _ = d.Close() },
			"The connection closed (1011: internal error)."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sessions := map[string]interface{}{"StopGrace": "200ms"}
			for k, v := range tc.sessions {
				sessions[k] = v
			}
			e := newEnv(t, map[string]interface{}{"Sessions": sessions})
			d := e.waitDevice()
			ctx := openConsole(t, e)
			term := launch(t, ctx, e.deviceID)
			term.waitState("connected")
			tc.end(d, term)
			state := "ended"
			if strings.HasPrefix(tc.want, "The connection closed") {
				state = "error"
			}
			if st := term.waitState(state); st != tc.want {
				t.Fatalf("status line %q, want %q", st, tc.want)
			}
		})
	}
}

// The page answers the device's shell pings: a session outlives many pong
// timeouts.
func TestBrowserAnswersShellPings(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"PingInterval": "100ms", "PongTimeout": "1s", "StopGrace": "200ms"},
	})
	e.waitDevice()
	ctx := openConsole(t, e)
	term := launch(t, ctx, e.deviceID)
	term.waitState("connected")
	// Three pong timeouts, i.e. thirty pings to answer.
	time.Sleep(3 * time.Second)
	term.typeKeys("echo alive-$((40+2))\n")
	term.waitLine("alive-42")
	if st := term.waitState("connected"); !strings.HasPrefix(st, "Connected") {
		t.Fatalf("status line %q", st)
	}
}
