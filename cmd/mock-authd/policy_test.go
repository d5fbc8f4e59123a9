package main

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tether-agent/tether/internal/auth"
	"github.com/tether-agent/tether/internal/tstest/dbustest"

	"github.com/tether-agent/tether/internal/tstest/syncbuf"
)

const policyFile = "io.mender.AuthenticationManager.conf"

type busConfig struct {
	XMLName  xml.Name `xml:"busconfig"`
	Policies []struct {
		Context string       `xml:"context,attr"`
		User    string       `xml:"user,attr"`
		Rules   []policyRule `xml:",any"`
	} `xml:"policy"`
}

type policyRule struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
}

func (r policyRule) String() string {
	parts := []string{r.XMLName.Local}
	for _, a := range r.Attrs {
		parts = append(parts, a.Name.Local+"="+a.Value)
	}
	return strings.Join(parts, " ")
}

func TestPolicyFileShape(t *testing.T) {
	data, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	var conf busConfig
	if err := xml.Unmarshal(data, &conf); err != nil {
		t.Fatalf("%s is not well-formed: %v", policyFile, err)
	}
	rules := map[string][]string{}
	for _, p := range conf.Policies {
		key := "context=" + p.Context
		if p.User != "" {
			key = "user=" + p.User
		}
		for _, r := range p.Rules {
			rules[key] = append(rules[key], r.String())
		}
	}
	want := map[string][]string{
		"context=default": {
			"deny own=" + auth.BusName,
			"deny send_destination=" + auth.BusName,
		},
		"user=root": {
			"allow own=" + auth.BusName,
			"allow send_destination=" + auth.BusName + " send_interface=" + auth.Interface,
		},
	}
	for key, wantRules := range want {
		for _, w := range wantRules {
			found := false
			for _, r := range rules[key] {
				found = found || r == w
			}
			if !found {
				t.Errorf("policy %s lacks %q; has %q", key, w, rules[key])
			}
		}
	}
	if len(rules) != len(want) {
		t.Errorf("policies %v; want exactly default and root", rules)
	}
}

// policyBus starts a bus with a distribution-like default-deny policy plus
// the shipped policy file, reachable by unprivileged users.
func policyBus(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := dbustest.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dbustest.StartBus(t, dbustest.Options{
		SocketPath: filepath.Join(dir, "bus"),
		Config:     dbustest.SystemPolicy + "<include>" + abs + "</include>",
	}).Address
}

func TestPolicyEnforced(t *testing.T) {
	addr := policyBus(t)
	if os.Geteuid() != 0 {
		// Unprivileged test run: we are the outsider.
		out, err := exec.Command(binPath, "--bus-address", addr, "--token", "x").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not allowed") {
			t.Fatalf("unprivileged mock-authd: err %v, output %q; want 'not allowed'", err, out)
		}
		checkOutsider(t, addr)
		return
	}

	sock := filepath.Join(dbustest.ShortTempDir(t), "ctl")
	startDaemon(t, nil, "--bus-address", addr, "--token", secret+"1", "--server-url", "u", "--control", sock)
	src := follow(t, addr)
	waitFor(t, src, auth.Credentials{Token: secret + "1", ServerURL: "u"})

	// An unprivileged process (nobody) is refused: it cannot own the name,
	// call the service, or receive its token signal.
	exe := copyTestBinary(t)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), policyClientEnv+"="+addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting unprivileged client: %v", err)
	}
	defer func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("unprivileged client: %v; stderr: %s", err, stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	readLine := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("unprivileged client ended early; stderr: %s", stderr.String())
		}
		t.Logf("unprivileged client: %s", lines.Text())
		return lines.Text()
	}
	expectPrefix := func(prefix string) string {
		t.Helper()
		l := readLine()
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("unprivileged client said %q, want %q...", l, prefix)
		}
		return l
	}
	expectPrefix("uid 65534")
	if l := expectPrefix("own "); !strings.Contains(l, "not allowed") {
		t.Fatalf("nobody: %s; want RequestName denied", l)
	}
	if l := expectPrefix("call "); !strings.Contains(l, "AccessDenied") {
		t.Fatalf("nobody: %s; want GetJwtToken denied", l)
	}
	expectPrefix("ready")

	// The service announces a token. Once a root call to the service has
	// been answered, the bus has routed that announcement; a marker sent
	// after that reaches the client after the announcement would have.
	control(t, sock, "set "+secret+"2 u")
	waitFor(t, src, auth.Credentials{Token: secret + "2", ServerURL: "u"})
	root, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var tok, url string
	if err := root.Object(auth.BusName, auth.ObjectPath).Call(auth.MethodGetJwtToken, 0).Store(&tok, &url); err != nil {
		t.Fatalf("root GetJwtToken: %v", err)
	}
	if err := root.Emit("/io/example/Marker", "io.example.Marker.Done"); err != nil {
		t.Fatal(err)
	}
	if l := readLine(); l != "marker" {
		t.Fatalf("unprivileged client said %q, want only the marker (no token signal)", l)
	}
}

// checkOutsider asserts that the current (unprivileged) process cannot
// use the service's name.
func checkOutsider(t *testing.T, addr string) {
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.RequestName(auth.BusName, dbus.NameFlagDoNotQueue); err == nil {
		t.Fatal("unprivileged RequestName succeeded")
	}
	err = conn.Object(auth.BusName, auth.ObjectPath).Call(auth.MethodGetJwtToken, 0).Err
	if err == nil || !strings.Contains(err.Error(), "not allowed") && !strings.Contains(fmt.Sprint(err), "AccessDenied") {
		t.Fatalf("unprivileged GetJwtToken: %v, want access denied", err)
	}
}

// copyTestBinary puts a copy of this test binary where an unprivileged
// user can run it (go test's build directory is private).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir := dbustest.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "policy-client")
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

const policyClientEnv = "MOCKAUTHD_POLICY_CLIENT"

// policyClient runs in the unprivileged child: it reports, one line each,
// its uid, whether it could own the name and call the service, then waits
// for either a token signal or the parent's marker.
func policyClient(addr string) int {
	fmt.Printf("uid %d\n", os.Geteuid())
	conn, err := dbus.Connect(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 1
	}
	defer conn.Close()
	for _, m := range [][]dbus.MatchOption{
		{dbus.WithMatchInterface(auth.Interface)},
		{dbus.WithMatchInterface("io.example.Marker")},
	} {
		if err := conn.AddMatchSignal(m...); err != nil {
			fmt.Fprintln(os.Stderr, "AddMatchSignal:", err)
			return 1
		}
	}
	sigs := make(chan *dbus.Signal, 16)
	conn.Signal(sigs)

	reply, err := conn.RequestName(auth.BusName, dbus.NameFlagDoNotQueue)
	fmt.Printf("own reply=%v err=%v\n", reply, err)
	var tok, url string
	err = conn.Object(auth.BusName, auth.ObjectPath).Call(auth.MethodGetJwtToken, 0).Store(&tok, &url)
	name := ""
	if de, ok := err.(dbus.Error); ok {
		name = de.Name
	}
	fmt.Printf("call err=%s gotToken=%v\n", name, tok != "")
	fmt.Println("ready")

	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-sigs:
			switch s.Name {
			case auth.SignalJwtTokenStateChange:
				fmt.Println("token signal received")
				return 0
			case "io.example.Marker.Done":
				fmt.Println("marker")
				return 0
			}
		case <-timeout:
			fmt.Println("timeout")
			return 0
		}
	}
}
