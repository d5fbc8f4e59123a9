package buildcheck

import (
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestPackageOf(t *testing.T) {
	for _, c := range []struct{ sym, want string }{
		{"runtime.mallocgc", "runtime"},
		{"runtime..inittask", "runtime"},
		{"net/http.(*Client).Do", "net/http"},
		{"github.com/godbus/dbus/v5.(*Conn).Send", "github.com/godbus/dbus/v5"},
		{"github.com/tether-agent/tether/internal/link.(*Link).run.func2.1", "github.com/tether-agent/tether/internal/link"},
		{"sync/atomic.(*Pointer[github.com/x/y.T]).Load", "sync/atomic"},
		{"slices.SortFunc[go.shape.[]uint8,go.shape.string]", "slices"},
		{"gopkg.in/yaml%2ev3.(*parser).parse", "gopkg.in/yaml.v3"},
		{"vendor/golang.org/x/net/idna.idnaValues", "vendor/golang.org/x/net/idna"},
		{"main.main", "main"},
		{"type:*net/http.Client", "(types)"},
		{"go:func.*", "(linker data)"},
		{"_rt0_arm64_linux", "_rt0_arm64_linux"},
	} {
		if got := PackageOf(c.sym); got != c.want {
			t.Errorf("PackageOf(%q) = %q, want %q", c.sym, got, c.want)
		}
	}
}

func TestModuleOf(t *testing.T) {
	bi := &buildinfo.BuildInfo{
		Main: debug.Module{Path: "github.com/tether-agent/tether"},
		Deps: []*debug.Module{
			{Path: "github.com/prometheus/client_golang"},
			{Path: "github.com/prometheus/client_golang/exp"}, // a nested module wins
			{Path: "github.com/godbus/dbus/v5"},
		},
	}
	for _, c := range []struct{ pkg, want string }{
		{"github.com/prometheus/client_golang/prometheus", "github.com/prometheus/client_golang"},
		{"github.com/prometheus/client_golang/exp/api", "github.com/prometheus/client_golang/exp"},
		{"github.com/godbus/dbus/v5", "github.com/godbus/dbus/v5"},
		{"github.com/tether-agent/tether/internal/link", "github.com/tether-agent/tether"},
		{"main", "github.com/tether-agent/tether"},
		{"net/http", "std"},
		{"vendor/golang.org/x/net/idna", "std"},
		{"_rt0_arm64_linux", "std"},
		{"(types)", "(types)"},
		{"example.com/not/a/dep", "(unknown module)"},
		{"github.com/godbus/dbusx", "(unknown module)"},
	} {
		if got := ModuleOf(c.pkg, bi); got != c.want {
			t.Errorf("ModuleOf(%q) = %q, want %q", c.pkg, got, c.want)
		}
	}
}

// TestMeasureSizes reads an unstripped build of sizetable: build info, this
// package's code, the standard library's and the linker's data.
func TestMeasureSizes(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "sizetable")
	cmd := exec.Command("go", "build", "-trimpath", "-o", exe, "./sizetable")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building sizetable: %v\n%s", err, out)
	}
	sz, err := MeasureSizes(exe)
	if err != nil {
		t.Fatal(err)
	}
	const self = "github.com/tether-agent/tether/internal/tools/buildcheck"
	for _, c := range []struct {
		what string
		m    map[string]uint64
		key  string
	}{
		{"package", sz.Packages, self},
		{"package", sz.Packages, "runtime"},
		{"package", sz.Packages, "debug/elf"},
		{"module", sz.Modules, "std"},
		{"module", sz.Modules, "github.com/tether-agent/tether"},
		{"section", sz.Sections, ".text"},
	} {
		if c.m[c.key] == 0 {
			t.Errorf("%s %s has no bytes", c.what, c.key)
		}
	}
	// Everything in .text belongs to some package, and nothing counted lies
	// outside the file.
	var code, all, mods uint64
	for _, v := range sz.Packages {
		all += v
	}
	for _, v := range sz.Modules {
		mods += v
	}
	for _, v := range sz.Sections {
		code += v
	}
	if all != mods || all == 0 || all > code {
		t.Errorf("packages sum to %d, modules to %d, file-backed sections to %d", all, mods, code)
	}
	if _, ok := sz.Modules["(unknown module)"]; ok {
		t.Error("a symbol was not attributed")
	}
	if _, err := MeasureSizes(exe + ".does-not-exist"); err == nil {
		t.Error("MeasureSizes of a missing file succeeded")
	}
}
