package proto_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProtocolsStandApart: a protocol package (internal/proto/<name>)
// links neither another protocol nor internal/config (issue 25's second
// import rule). Each protocol owns its configuration section, so that
// internal/config depends on the protocols and never the other way; and a
// protocol talks to the others only through the router, so that one can
// be left out or replaced without touching the rest. The contract
// (internal/proto itself), wire, confval and the other shared helpers
// are allowed. Test files count too: a test that needs another
// protocol's package tests more than its own.
func TestProtocolsStandApart(t *testing.T) {
	const mod = "github.com/tether-agent/tether/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", mod+"internal/proto/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var protos []string
	for _, pkg := range strings.Fields(string(out)) {
		if name, _ := protoName(strings.TrimPrefix(pkg, mod)); name != "" {
			protos = append(protos, pkg)
		}
	}
	if len(protos) < 4 {
		t.Fatalf("found %d protocol packages (%v), want the four", len(protos), protos)
	}
	for _, pkg := range protos {
		own, _ := protoName(strings.TrimPrefix(pkg, mod))
		out, err := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			// A test variant reads "path [path.test]"; its path is what counts.
			dep, _, _ = strings.Cut(dep, " ")
			rel, ours := strings.CutPrefix(dep, mod)
			if !ours || strings.HasSuffix(rel, ".test") { // the test binary's main
				continue
			}
			if rel == "internal/config" || strings.HasPrefix(rel, "internal/config/") {
				t.Errorf("%s links %s: a protocol owns its Config; internal/config imports the protocol, not the other way", pkg, dep)
			}
			if name, ok := protoName(rel); ok && name != "" && name != own {
				t.Errorf("%s links another protocol, %s", pkg, dep)
			}
		}
	}
}

// protoName is the protocol of a package path under internal/proto/ ("" for
// internal/proto itself); ok is false outside it.
func protoName(rel string) (name string, ok bool) {
	if rel == "internal/proto" {
		return "", true
	}
	rest, ok := strings.CutPrefix(rel, "internal/proto/")
	if !ok {
		return "", false
	}
	name, _, _ = strings.Cut(rest, "/")
	return name, true
}
