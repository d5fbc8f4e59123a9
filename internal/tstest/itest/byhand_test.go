package itest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/tstest/dbustest"
	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

// byHandSteps returns the command lines of the "by hand" block of
// docs/demo.md (comments dropped).
func byHandSteps(t *testing.T, root string) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(root, "docs", "demo.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i := strings.Index(text, "you can also run by hand")
	if i < 0 {
		t.Fatal(`docs/demo.md has no "by hand" steps`)
	}
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(text[i:])
	if block == nil {
		t.Fatal("docs/demo.md: no sh block after the by-hand paragraph")
	}
	var steps []string
	for _, l := range strings.Split(block[1], "\n") {
		if j := strings.Index(l, " #"); j >= 0 {
			l = l[:j]
		}
		if l = strings.TrimSpace(l); l != "" {
			steps = append(steps, l)
		}
	}
	return steps
}

// TestReadmeByHand runs the by-hand steps of docs/demo.md as written, as root, with
// three substitutions that keep the machine alone: the system bus is a
// private dbus-daemon with a distribution's default-deny policy that
// includes <etc>/dbus-1/system.d (DBUS_SYSTEM_BUS_ADDRESS), /etc is a
// directory of the test's (BYHAND_ETC and the --config path), and the port
// and key file are the test's. Without the policy step mock-authd cannot own
// its name; without the configuration step tether does not start.
func TestReadmeByHand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the by-hand steps run mock-authd and tether as root; run the integration tests as root (.ci/run does)")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	steps := byHandSteps(t, root)
	if len(steps) < 6 {
		t.Fatalf("by-hand steps %q: too few", steps)
	}

	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	bus := dbustest.StartWithConfig(t, dbustest.SystemPolicy+"<includedir>"+filepath.Join(etc, "dbus-1", "system.d")+"</includedir>\n")
	addr := freeAddr(t)
	env := append(os.Environ(),
		"DBUS_SYSTEM_BUS_ADDRESS="+bus, "BYHAND_ETC="+etc, "MOCK_MENDER_SERVER=http://"+addr,
		"TETHER_LOG_JOURNAL=off")
	subst := strings.NewReplacer(
		"127.0.0.1:8080", addr,
		"~/.config/tether-demo", filepath.Join(dir, "demo"),
		"/etc/tether/tether.conf", filepath.Join(etc, "tether", "tether.conf"),
	)

	command := func(line string) *exec.Cmd {
		cmd := exec.Command("bash", "-c", "exec "+subst.Replace(strings.TrimPrefix(line, "sudo ")))
		cmd.Dir, cmd.Env = root, env
		return cmd
	}
	var logs []*syncbuf.Buffer
	defer func() {
		if t.Failed() {
			for _, l := range logs {
				t.Logf("%s", l.String())
			}
		}
	}()
	for _, line := range steps {
		switch {
		case strings.Contains(line, " serve "), strings.Contains(line, "mock-authd"), strings.HasSuffix(line, " daemon"):
			// Long-running: a terminal of its own in docs/demo.md.
			cmd := command(line)
			out := &syncbuf.Buffer{}
			_, _ = out.Write([]byte("== " + line + "\n"))
			cmd.Stdout, cmd.Stderr = out, out
			logs = append(logs, out)
			if err := cmd.Start(); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			if strings.Contains(line, " serve ") {
				eventually(t, 10*time.Second, "the mock server listening", func() bool { return strings.Contains(out.String(), "listening") })
			}
		case strings.HasSuffix(line, "mock-mender devices"):
			var last []byte
			eventually(t, 20*time.Second, "a connected device in `mock-mender devices`", func() bool {
				last, _ = command(line).CombinedOutput()
				// "  connected" at the end of a line: "disconnected"
				// contains the word too.
				return bytes.Contains(last, []byte("  connected\n"))
			})
		case strings.HasPrefix(line, "bin/mock-mender attach"):
			cmd := command(line)
			cmd.Stdin = strings.NewReader("echo by-hand-$((6*7))\nexit\n")
			out, err := cmd.CombinedOutput()
			if !bytes.Contains(out, []byte("by-hand-42")) {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
		default:
			out, err := command(line).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
		}
	}
}
