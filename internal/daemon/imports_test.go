package daemon

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShippedBinaryHasNoTestCode: the daemon a device ships links none of
// the test doubles, test helpers or tools that live beside the product
// under internal/ (a test-only import that slipped into product code would
// bring a mock server or a private bus onto the device).
func TestShippedBinaryHasNoTestCode(t *testing.T) {
	const mod = "github.com/tether-agent/tether/"
	forbidden := []string{
		"internal/mockserver", "internal/mockauth", "internal/tstest/dbustest", "internal/tstest/leakcheck",
		"internal/tstest/syncbuf", "internal/tstest/testclock", "internal/tstest/itest", "internal/tstest/containertest",
		"internal/tools/bench", "internal/tools/buildcheck", "internal/tools/layercheck", "internal/tools/fleetsim",
		"internal/tstest/hil", "internal/tstest/slowpath", "cmd/mock-mender", "cmd/mock-authd",
	}
	for _, tags := range []string{"", "nometrics"} {
		out, err := exec.Command("go", "list", "-tags", tags, "-deps", "-f", "{{.ImportPath}}", mod+"cmd/tether").Output()
		if err != nil {
			t.Fatalf("go list (tags %q): %v", tags, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			rel, ours := strings.CutPrefix(dep, mod)
			if !ours {
				continue
			}
			for _, f := range forbidden {
				if rel == f || strings.HasPrefix(rel, f+"/") {
					t.Errorf("cmd/tether (tags %q) links %s", tags, dep)
				}
			}
		}
	}
}
