//go:build container

package containertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/mockserver"
)

const (
	adminEmail = "admin@tether.local"
	adminPass  = "tether"
	deviceID   = "0c0a7a1e-7e7e-4e7e-8e7e-c0a7a1e7e7e7"
	// Fixed stamps, so that two builds must give the same image.
	stampEpoch   = "1764547200"
	stampVersion = "containertest"
	stampCommit  = "000000000000"
)

// podman runs podman on a storage of its own under build/ (vfs, so no
// kernel overlay support is needed), with runc (crun refuses hybrid
// cgroups), cgroupfs and a file event log: no systemd, no daemon.
type podman struct {
	t      *testing.T
	global []string
}

func newPodman(t *testing.T, storage string) *podman {
	// Run state in a short temporary path: conmon's sockets live there
	// and a socket path is limited to 108 bytes.
	run, err := os.MkdirTemp("", "tether-ct-")
	if err != nil {
		t.Fatal(err)
	}
	p := &podman{t: t, global: []string{
		"--root", storage, "--runroot", filepath.Join(run, "runroot"), "--tmpdir", filepath.Join(run, "tmp"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc",
	}}
	t.Cleanup(func() {
		_, _ = p.try("rm", "--all", "--force", "--time", "0")
		_, _ = p.try("rmi", "--all", "--force")
		if err := os.RemoveAll(storage); err != nil {
			t.Errorf("remove the test's image storage: %v", err)
		}
		os.RemoveAll(run)
	})
	return p
}

// commandLine is podman with its global options, as CONTAINER_PODMAN.
func (p *podman) commandLine() string { return "podman " + strings.Join(p.global, " ") }

func (p *podman) try(args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command("podman", append(append([]string{}, p.global...), args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("podman %s: %w\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.try(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// logs is the container's output; tether logs to stderr.
func (p *podman) logs(name string) string {
	out, err := exec.Command("podman", append(append([]string{}, p.global...), "logs", name)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("podman logs: %v\n%s", err, out)
	}
	return string(out)
}

// image is what the tests need to know of a built image.
type image struct {
	ID     string `json:"Id"`
	Size   int64  `json:"Size"`
	RootFS struct {
		Layers []string `json:"Layers"`
	} `json:"RootFS"`
	Healthcheck *struct {
		Test []string `json:"Test"`
	} `json:"Healthcheck"`
}

func (p *podman) inspectImage(tag string) image {
	p.t.Helper()
	var imgs []image
	if err := json.Unmarshal([]byte(p.must("image", "inspect", tag)), &imgs); err != nil || len(imgs) != 1 {
		p.t.Fatalf("image inspect %s: %v", tag, err)
	}
	return imgs[0]
}

// hostPlatform is this machine's platform as make cross names it.
func hostPlatform() string {
	if runtime.GOARCH == "arm" {
		return "linux/arm/v7"
	}
	return "linux/" + runtime.GOARCH
}

func repoRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// images builds the image three times: with `make container` (OCI), from
// a second build context at another path (must be the same image), and
// in Docker format for the HEALTHCHECK (must have the same layer).
type images struct{ oci, docker string }

func buildImages(t *testing.T, p *podman, root, work string) images {
	t.Helper()
	stamps := []string{"SOURCE_DATE_EPOCH=" + stampEpoch, "VERSION=" + stampVersion, "COMMIT=" + stampCommit}
	first := filepath.Join(work, "first")
	start := time.Now()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", root, "container",
		"CONTAINER_PLATFORM=" + hostPlatform(), "CONTAINER_TAG=localhost/tether:ct",
		"CONTAINER_BUILD=" + first, "CONTAINER_PODMAN=" + p.commandLine()}, stamps...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make container: %v\n%s", err, out)
	}
	t.Logf("CONTAINER-RESULT build (make container, Go build included): %v", time.Since(start).Round(100*time.Millisecond))

	script := func(tag, ctxDir, format string) time.Duration {
		start := time.Now()
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "container.sh"), "build", hostPlatform(), tag)
		cmd.Env = append(os.Environ(), append(stamps, "DIST="+filepath.Join(first, "dist"), "WORK="+ctxDir,
			"FORMAT="+format, "PODMAN="+p.commandLine())...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("container.sh build %s: %v\n%s", tag, err, out)
		}
		return time.Since(start)
	}
	took := script("localhost/tether:ct-again", filepath.Join(work, "second-copy"), "oci")
	script("localhost/tether:ct-docker", filepath.Join(work, "docker"), "docker")

	a, b, d := p.inspectImage("localhost/tether:ct"), p.inspectImage("localhost/tether:ct-again"), p.inspectImage("localhost/tether:ct-docker")
	if a.ID != b.ID {
		t.Errorf("two builds of the same inputs differ: image %s and %s", a.ID, b.ID)
	}
	if len(a.RootFS.Layers) != 1 || fmt.Sprint(a.RootFS.Layers) != fmt.Sprint(d.RootFS.Layers) {
		t.Errorf("OCI and Docker format builds differ in their layers: %v and %v", a.RootFS.Layers, d.RootFS.Layers)
	}
	if a.Healthcheck != nil {
		t.Errorf("the OCI image has a health check: %v", a.Healthcheck)
	}
	if d.Healthcheck == nil {
		t.Error("the Docker-format image lost its HEALTHCHECK")
	}
	t.Logf("CONTAINER-RESULT image %s, %.1f MiB, layer %s; second build (context only, new path) %v, same image id: %v",
		a.ID[:12], float64(a.Size)/(1<<20), a.RootFS.Layers, took.Round(10*time.Millisecond), a.ID == b.ID)
	return images{oci: "localhost/tether:ct", docker: "localhost/tether:ct-docker"}
}

func TestContainer(t *testing.T) {
	root := repoRoot(t)
	work := filepath.Join(root, "build", "container", "test")
	if err := os.RemoveAll(work); err != nil {
		t.Fatal(err)
	}
	p := newPodman(t, filepath.Join(work, "storage"))
	imgs := buildImages(t, p, root, work)

	srv := mockserver.New(mockserver.Options{Users: map[string]string{adminEmail: adminPass},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("start mock server: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	userJWT, err := mockserver.Login(ctx, url, adminEmail, adminPass)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, p: p, srv: srv, url: url, jwt: userJWT, ctx: ctx}

	tests := []struct {
		name  string
		image string
		// tokenFile: the token comes from a mounted file that the test
		// rotates; otherwise from TETHER_AUTH_TOKEN.
		tokenFile bool
		// host: --pid=host --privileged, shells through host-shell.
		host bool
	}{
		{name: "token from the environment, Docker format with HEALTHCHECK", image: imgs.docker},
		{name: "rotated token file", image: imgs.oci, tokenFile: true},
		{name: "host shell through nsenter", image: imgs.oci, host: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			c := h.start(fmt.Sprintf("tether-ct-%d-%d", os.Getpid(), i), tc.image, tc.tokenFile, tc.host)
			d := h.waitDevice(nil)
			term := h.open()
			switch {
			case tc.host:
				h.checkHostShell(term)
			default:
				h.checkShellUser(term)
				h.checkOrphansReaped(c, term)
			}
			if tc.tokenFile {
				term = h.rotate(c, d)
			}
			if c.healthcheck {
				h.checkHealth(c)
			}
			h.stop(c, term)
		})
	}
}

type harness struct {
	t   *testing.T
	p   *podman
	srv *mockserver.Server
	url string
	jwt string
	ctx context.Context
}

type container struct {
	name        string
	metrics     string
	tokenDir    string
	healthcheck bool
	host        bool
	pid         int    // the host's pid of the container's PID 1
	pidNS       string // its pid namespace, "" with --pid=host
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs the image as docs/building.md says: the server URL and the token
// in the environment (or a mounted token directory), host networking.
func (h *harness) start(name, img string, tokenFile, host bool) *container {
	t := h.t
	c := &container{name: name, metrics: freeAddr(t), host: host,
		healthcheck: h.p.inspectImage(img).Healthcheck != nil}
	args := []string{"run", "--detach", "--name", name, "--network", "host",
		// Raising limits is not permitted on CI's machine; these are
		// the ones it has.
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"-e", "TETHER_SERVERURL=" + h.url,
		// Host networking: the health check's port must be free on the host.
		"-e", "TETHER_METRICS_LISTEN=" + c.metrics,
	}
	if c.healthcheck {
		// No systemd here to time the checks; the test runs them itself.
		args = append(args, "--health-interval", "disable")
	}
	token := h.srv.IssueDeviceToken(deviceID)
	if tokenFile {
		// A directory is mounted, not the file: a file replaced by
		// rename would stay the old one behind a file bind mount.
		c.tokenDir = t.TempDir()
		writeToken(t, c.tokenDir, token)
		args = append(args, "-v", c.tokenDir+":/run/secrets/tether:ro", "-e", "TETHER_AUTH_TOKENFILE=/run/secrets/tether/token")
	} else {
		args = append(args, "-e", "TETHER_AUTH_TOKEN="+token)
	}
	if host {
		// The namespaces of this test stand for the host's: they are
		// the host's, and the host's PID 1 may refuse to be entered
		// (it does on CI's machine).
		args = append(args, "--pid", "host", "--privileged", "-e", "TETHER_USER=root",
			"-e", "TETHER_SHELLCOMMAND=/usr/bin/host-shell",
			"-e", fmt.Sprintf("TETHER_SHELLARGUMENTS=--target,%d,--login", os.Getpid()))
	}
	h.p.must(append(args, img)...)
	t.Cleanup(func() {
		if t.Failed() {
			logs := h.p.logs(name)
			t.Logf("container log:\n%s", logs)
		}
		_, _ = h.p.try("rm", "--force", "--time", "0", name)
	})
	var err error
	c.pid, err = strconv.Atoi(h.p.must("inspect", "--format", "{{.State.Pid}}", name))
	if err != nil || c.pid <= 0 {
		t.Fatalf("container %s has no pid: %v", name, err)
	}
	if !host {
		c.pidNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.pid))
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// writeToken replaces the token file atomically, root's and 0400 as a
// mounted secret is.
func writeToken(t *testing.T, dir, token string) {
	tmp := filepath.Join(dir, ".token.new")
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) waitDevice(old *mockserver.Device) *mockserver.Device {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
	defer cancel()
	var d *mockserver.Device
	var err error
	if old == nil {
		d, err = h.srv.WaitDevice(ctx, deviceID)
	} else {
		d, err = h.srv.WaitReconnect(ctx, old)
	}
	if err != nil {
		h.t.Fatalf("the container's tether did not connect: %v", err)
	}
	return d
}

func (h *harness) open() *mockserver.Terminal {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	term, err := mockserver.OpenTerminal(ctx, h.url, h.jwt, deviceID, 80, 24)
	if err != nil {
		h.t.Fatalf("open a terminal through the server: %v", err)
	}
	h.t.Cleanup(func() { term.Close() })
	return term
}

// run types a command and returns the output up to a marker it prints
// after it (split, so the echoed input does not match).
func (h *harness) run(term *mockserver.Terminal, cmd string) string {
	h.t.Helper()
	marker := fmt.Sprintf("__done_%d__", time.Now().UnixNano())
	half := len(marker) / 2
	fmt.Fprintf(term, "%s\nprintf '%%s%%s\\n' '%s' '%s'\n", cmd, marker[:half], marker[half:])
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	out, err := term.Expect(ctx, marker)
	if err != nil {
		h.t.Fatalf("command %q: %v; output %q", cmd, err, out)
	}
	return out
}

func (h *harness) checkShellUser(term *mockserver.Terminal) {
	h.t.Helper()
	if out := h.run(term, "id"); !strings.Contains(out, "uid=1000(tether) gid=1000(tether)") {
		h.t.Fatalf("the shell does not run as tether: %q", out)
	}
	if out := h.run(term, "echo \"home=$HOME\"; touch ~/written && echo wrote-home"); !strings.Contains(out, "home=/home/tether") || !strings.Contains(out, "\r\nwrote-home") {
		h.t.Fatalf("the shell user's home: %q", out)
	}
}

// proc is one line of the host's process table.
type proc struct {
	pid, ppid int
	state     byte
	comm      string
}

func processes(pidNS string) []proc {
	ents, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pidNS != "" {
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || ns != pidNS {
				continue
			}
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(st, '('), bytes.LastIndexByte(st, ')')
		f := strings.Fields(string(st[end+1:]))
		if open < 0 || len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ps = append(ps, proc{pid: pid, ppid: ppid, state: f[0][0], comm: string(st[open+1 : end])})
	}
	return ps
}

// checkOrphansReaped leaves two processes to tether, PID 1: one that
// exits at once (it must be reaped, no zombie stays) and one that runs
// on (the stop must end it too).
func (h *harness) checkOrphansReaped(c *container, term *mockserver.Terminal) {
	h.t.Helper()
	h.run(term, "sh -c 'sleep 1 & setsid sleep 600 </dev/null >/dev/null 2>&1 & exit'")
	adopted := func() (running, zombies int) {
		for _, p := range processes(c.pidNS) {
			if p.ppid == c.pid && p.comm == "sleep" {
				if p.state == 'Z' {
					zombies++
				} else {
					running++
				}
			}
		}
		return running, zombies
	}
	eventually(h.t, 5*time.Second, "tether to adopt both sleeps", func() bool { r, z := adopted(); return r+z == 2 })
	eventually(h.t, 10*time.Second, "the exited orphan to be reaped", func() bool { r, z := adopted(); return r == 1 && z == 0 })
}

func (h *harness) checkHostShell(term *mockserver.Terminal) {
	h.t.Helper()
	marker := filepath.Join(h.t.TempDir(), "marker")
	want := fmt.Sprintf("host-%d", time.Now().UnixNano())
	if err := os.WriteFile(marker, []byte(want+"\n"), 0o644); err != nil {
		h.t.Fatal(err)
	}
	// The marker is only in the host's /tmp; the host's PID 1 is not tether.
	out := h.run(term, "cat "+marker+"; echo \"pid1=$(cat /proc/1/comm)\"")
	pid1 := regexp.MustCompile(`pid1=(\S+)`).FindStringSubmatch(out)
	if !strings.Contains(out, want) || pid1 == nil || pid1[1] == "tether" {
		h.t.Fatalf("host-shell did not reach the host: %q", out)
	}
}

// rotate revokes the device's token, writes a new one into the mounted
// directory and waits for tether to reconnect with it; a terminal works
// over the new connection.
func (h *harness) rotate(c *container, d *mockserver.Device) *mockserver.Terminal {
	h.t.Helper()
	h.srv.RevokeDeviceTokens(deviceID)
	token := h.srv.IssueDeviceToken(deviceID)
	start := time.Now()
	writeToken(h.t, c.tokenDir, token)
	d2 := h.waitDevice(d)
	if d2.Token() != token {
		h.t.Fatal("tether reconnected with the old token")
	}
	h.t.Logf("CONTAINER-RESULT token file rotated: reconnected with the new token in %v", time.Since(start).Round(10*time.Millisecond))
	term := h.open()
	if out := h.run(term, "id -un"); !strings.Contains(out, "\r\ntether") {
		h.t.Fatalf("shell after the rotation: %q", out)
	}
	return term
}

// checkHealth runs the image's HEALTHCHECK as the runtime's timer would.
func (h *harness) checkHealth(c *container) {
	h.t.Helper()
	if out, err := h.p.try("healthcheck", "run", c.name); err != nil {
		h.t.Fatalf("healthcheck: %q, %v", out, err)
	}
	if st := h.p.must("inspect", "--format", "{{.State.Health.Status}}", c.name); st != "healthy" {
		h.t.Fatalf("health status %q after a check, want healthy", st)
	}
}

// stop stops the container as a runtime does (SIGTERM, then SIGKILL after
// 5 s): tether must stop the shell, exit 0 within 2 s, and nothing of the
// container may be left.
func (h *harness) stop(c *container, term *mockserver.Terminal) {
	t := h.t
	t.Helper()
	// The shell's pid, to check on it after the stop with --pid=host.
	m := regexp.MustCompile(`shell-pid=([0-9]+)`).FindStringSubmatch(h.run(term, "echo shell-pid=$$"))
	if m == nil {
		t.Fatal("no shell pid from echo $$")
	}
	shellPid, _ := strconv.Atoi(m[1])
	if c.pidNS != "" {
		if n := len(processes(c.pidNS)); n < 3 {
			t.Fatalf("%d processes in the container before the stop, want tether, the shell and its orphan", n)
		}
	}
	start := time.Now()
	h.p.must("stop", "--time", "5", c.name)
	var st struct {
		ExitCode   int
		FinishedAt time.Time
	}
	if err := json.Unmarshal([]byte(h.p.must("inspect", "--format", "{{json .State}}", c.name)), &st); err != nil {
		t.Fatal(err)
	}
	took := st.FinishedAt.Sub(start)
	t.Logf("CONTAINER-RESULT stop: exit %d %v after SIGTERM (podman stop returned after %v)",
		st.ExitCode, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if st.ExitCode != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", st.ExitCode)
	}
	if took > 2*time.Second {
		t.Errorf("exited %v after SIGTERM, want within 2 s", took)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	if _, err := term.WaitStop(ctx); err != nil {
		t.Errorf("the user was not told that the shell stopped: %v", err)
	}
	logs := h.p.logs(c.name)
	if !strings.Contains(logs, "tether stopped") {
		t.Errorf("no clean shutdown in the log:\n%s", logs)
	}
	if c.pidNS != "" {
		if left := processes(c.pidNS); len(left) > 0 {
			t.Errorf("processes left in the container's pid namespace: %+v", left)
		}
	}
	if c.host {
		// The host's pid namespace: the shell and tether must be gone.
		for _, pid := range []int{shellPid, c.pid} {
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
				t.Errorf("process %d (%s) is still running", pid, strings.TrimSpace(string(comm)))
			}
		}
	}
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

// Dockerfile.cross builds the same image in one step where a registry is
// at hand; it cannot run here, but its runtime stage must say what the
// Containerfile says, instruction for instruction, from ARG VERSION on.
func TestDockerfileCrossMatchesContainerfile(t *testing.T) {
	root := repoRoot(t)
	tail := func(name, stage string) []string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if stage != "" {
			i := strings.Index(text, stage)
			if i < 0 {
				t.Fatalf("%s has no %q", name, stage)
			}
			text = text[i:]
		}
		i := strings.Index(text, "\nARG VERSION=")
		if i < 0 {
			t.Fatalf("%s has no ARG VERSION", name)
		}
		var lines []string
		for _, l := range strings.Split(text[i:], "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	want, got := tail("Containerfile", ""), tail("Dockerfile.cross", "FROM scratch AS runtime")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Dockerfile.cross's runtime stage differs from Containerfile:\n%s\nwant:\n%s",
			strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
