package itest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/sys/unix"
)

// waitText polls the terminal's buffer until match finds what it wants in
// it, and returns the buffer; it fails the test with the buffer after 15 s.
func (c consoleTerm) waitText(what string, match func(text string) bool) string {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var text string
	for {
		browse(c.t, c.ctx, "read terminal", chromedp.Evaluate(fmt.Sprintf(`tetherConsole.text(%d) || ""`, c.n), &text))
		if match(text) {
			return text
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("terminal %d: no %s; buffer:\n%s", c.n, what, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var (
	pageTickRE = regexp.MustCompile(`(?m)^tick (\d+)\s*$`)
	// Not anchored: the shell's first prompt may come after the echo of
	// keys typed ahead of it. The echo of the command itself has "$$".
	pagePidRE    = regexp.MustCompile(`pid=(\d+)`)
	pageNoticeRE = regexp.MustCompile(`(?m)^\[tether: ` + reattachNotice + ` .* \(pid (\d+)\); its last \d+ bytes of output follow\]\s*$`)
)

// pageTicks lists the tick numbers on the terminal's lines, in order.
func pageTicks(text string) []int {
	var out []int
	for _, m := range pageTickRE.FindAllStringSubmatch(text, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// The drop-and-reopen of issue 26 in the web console: a job runs in the
// page's terminal, the device link drops (the real server's rule: the
// page's websocket is closed with 1011), tether reconnects, and the same
// user's next terminal in the page gets the same shell back: the notice
// line with its pid, the ticks printed while nobody watched, then live
// ones, in the new terminal's size.
func TestBrowserReattachAfterLinkDrop(t *testing.T) {
	e := newEnv(t, map[string]interface{}{
		"Sessions": map[string]interface{}{"StopGrace": "200ms"},
	})
	d := e.waitDevice()
	// Wide enough that the notice line does not wrap in the terminal.
	ctx := openConsole(t, e, chromedp.WindowSize(1500, 760))

	t1 := launch(t, ctx, e.deviceID)
	t1.waitState("connected")
	t1.typeKeys("echo pid=$$\n")
	m := pagePidRE.FindStringSubmatch(t1.waitText("pid line", pagePidRE.MatchString))
	pid, _ := strconv.Atoi(m[1])
	t1.typeKeys("i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done\n")
	t1.waitLine("tick 3")

	_ = d.Close()
	if st := t1.waitState("error"); st != "The connection closed (1011: internal error)." {
		t.Fatalf("status line after the link drop %q", st)
	}
	// The first terminal is closed: what it shows now is all it will show.
	before := pageTicks(t1.waitText("ticks", func(s string) bool { return len(pageTicks(s)) > 0 }))
	last := before[len(before)-1]

	rctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	_, err := e.srv.WaitReconnect(rctx, d)
	cancel()
	if err != nil {
		t.Fatalf("no reconnect: %v", err)
	}
	// A gap the job prints through with nobody attached.
	time.Sleep(time.Second)
	browse(t, ctx, "device connected again",
		chromedp.WaitVisible(fmt.Sprintf(`.device[data-device=%q][data-status="connected"] button.launch:not([disabled])`, e.deviceID), chromedp.ByQuery))

	t2 := launch(t, ctx, e.deviceID)
	t2.waitState("connected")
	text := t2.waitText("reattach notice", pageNoticeRE.MatchString)
	if got, _ := strconv.Atoi(pageNoticeRE.FindStringSubmatch(text)[1]); got != pid {
		t.Fatalf("notice names shell %d, want %d:\n%s", got, pid, text)
	}
	text = t2.waitText(fmt.Sprintf("tick %d", last+15), func(s string) bool {
		tk := pageTicks(s)
		return len(tk) > 0 && tk[len(tk)-1] >= last+15
	})
	// The ticks after the notice: the gap first (nothing lost since the
	// first terminal's last one), then live, in order without a hole.
	after := pageTicks(text[pageNoticeRE.FindStringIndex(text)[1]:])
	if len(after) == 0 || after[0] > last+1 {
		t.Fatalf("ticks after the notice start at %v, want at most %d (the first terminal's last was %d):\n%s", after, last+1, last, text)
	}
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 {
			t.Fatalf("ticks not contiguous across the gap: %v", after)
		}
	}
	t.Logf("first terminal's last tick %d; the second's start at %d", last, after[0])

	// The shell's terminal has the page's size: the job is in the
	// foreground, so ask its pty from outside.
	cols, rows := t2.size()
	tty, err := os.Open(fmt.Sprintf("/proc/%d/fd/0", pid))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, fmt.Sprintf("the shell's pty at %dx%d", cols, rows), func() bool {
		ws, err := unix.IoctlGetWinsize(int(tty.Fd()), unix.TIOCGWINSZ)
		return err == nil && int(ws.Col) == cols && int(ws.Row) == rows
	})
	_ = tty.Close()

	// Live: more ticks keep coming, and the first terminal stays as it was.
	t2.waitLine(fmt.Sprintf("tick %d", after[len(after)-1]+5))
	if now := pageTicks(t1.waitText("ticks", func(string) bool { return true })); now[len(now)-1] != last {
		t.Fatalf("the closed terminal went on to tick %d", now[len(now)-1])
	}
	if !strings.Contains(e.log.String(), "event=session_reattach") {
		t.Fatal("no reattach journal line")
	}

	var png []byte
	browse(t, ctx, "screenshot", chromedp.CaptureScreenshot(&png))
	shot := filepath.Join(artifactDir(t), "console-reattach.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}
