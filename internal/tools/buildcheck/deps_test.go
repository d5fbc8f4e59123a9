package buildcheck

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDependencies pins what the device binaries must not link, for the
// flash budgets (platform.go): the link's own websocket client
// (internal/wsclient) keeps net/http's client side, its IDNA and Unicode
// tables, compress/flate and gorilla/websocket out, which the slim build
// then lacks entirely (its metrics endpoint is compiled out, so nothing
// else wants net/http). The full build keeps net/http for the Prometheus
// endpoint, but not gorilla.
func TestDependencies(t *testing.T) {
	const mod = "github.com/tether-agent/tether/"
	tests := []struct {
		tags      string
		forbidden []string // import paths; a path also forbids what is below it
	}{
		{"nometrics", []string{"net/http", "compress/flate", "github.com/gorilla/websocket",
			"golang.org/x/net/idna", "vendor/golang.org/x/net/idna", "golang.org/x/text/unicode/norm", "vendor/golang.org/x/text/unicode/norm"}},
		{"", []string{"github.com/gorilla/websocket"}},
	}
	for _, tt := range tests {
		t.Run("tags="+tt.tags, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-tags", tt.tags, "-deps", "-f", "{{.ImportPath}}", "./cmd/tether")
			cmd.Dir = filepath.Join("..", "..", "..")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list (tags %q): %v", tt.tags, err)
			}
			deps := strings.Fields(string(out))
			if !slices.Contains(deps, mod+"internal/link") {
				t.Fatalf("go list (tags %q) does not list internal/link: %q", tt.tags, out)
			}
			for _, dep := range deps {
				for _, f := range tt.forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") {
						t.Errorf("cmd/tether (tags %q) links %s", tt.tags, dep)
					}
				}
			}
		})
	}
}
