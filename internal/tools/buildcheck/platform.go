// Package buildcheck inspects built tether binaries: that a cross build is
// fully static for the right device architecture, that the slim build
// really lacks what its tags compile out, and where the bytes go.
//
// The tests of this package are what `make cross` runs on dist/; without
// TETHER_DIST they build the host's binaries themselves, so that a plain
// `go test ./...` checks the same properties.
package buildcheck

import (
	"debug/elf"
	"fmt"
	"strings"
)

// Platform is one device architecture tether ships for.
type Platform struct {
	// Dir is the directory under dist/: linux-arm64, linux-armv7.
	Dir string
	// Docker is the platform as `docker buildx --platform` names it.
	Docker string
	GOOS   string
	GOARCH string
	// GOARM and GOMIPS are empty where they do not apply.
	GOARM  string
	GOMIPS string

	Machine elf.Machine
	Class   elf.Class
	Data    elf.Data

	// Mocks: the QEMU tests boot this architecture, so its dist directory
	// also holds mock-mender and mock-authd.
	Mocks bool
	// FullBudget and SlimBudget are the most bytes the stripped tether and
	// tether-slim may have; zero means no budget.
	FullBudget, SlimBudget int64
}

// MiB is the unit of the size budgets (what ls -lh calls M).
const MiB = 1 << 20

// Platforms lists every platform `make cross` builds, in its order.
func Platforms() []Platform {
	le := elf.ELFDATA2LSB
	// The budgets are the sizes reached in December 2026 (Go 1.26), rounded
	// up to the next quarter MiB, so that growth past a page shows; see
	// docs/building.md, "Size".
	const (
		arm64Full, arm64Slim = 10 * MiB, 6.5 * MiB
		armv7Full, armv7Slim = 10.25 * MiB, 6.75 * MiB
	)
	return []Platform{
		{Dir: "linux-amd64", Docker: "linux/amd64", GOOS: "linux", GOARCH: "amd64",
			Machine: elf.EM_X86_64, Class: elf.ELFCLASS64, Data: le, Mocks: true},
		{Dir: "linux-386", Docker: "linux/386", GOOS: "linux", GOARCH: "386",
			Machine: elf.EM_386, Class: elf.ELFCLASS32, Data: le},
		{Dir: "linux-arm64", Docker: "linux/arm64", GOOS: "linux", GOARCH: "arm64",
			Machine: elf.EM_AARCH64, Class: elf.ELFCLASS64, Data: le, Mocks: true,
			FullBudget: arm64Full, SlimBudget: arm64Slim},
		{Dir: "linux-armv6", Docker: "linux/arm/v6", GOOS: "linux", GOARCH: "arm", GOARM: "6",
			Machine: elf.EM_ARM, Class: elf.ELFCLASS32, Data: le},
		{Dir: "linux-armv7", Docker: "linux/arm/v7", GOOS: "linux", GOARCH: "arm", GOARM: "7",
			Machine: elf.EM_ARM, Class: elf.ELFCLASS32, Data: le, Mocks: true,
			FullBudget: armv7Full, SlimBudget: armv7Slim},
		{Dir: "linux-riscv64", Docker: "linux/riscv64", GOOS: "linux", GOARCH: "riscv64",
			Machine: elf.EM_RISCV, Class: elf.ELFCLASS64, Data: le},
		{Dir: "linux-mipsle", Docker: "linux/mipsle", GOOS: "linux", GOARCH: "mipsle", GOMIPS: "softfloat",
			Machine: elf.EM_MIPS, Class: elf.ELFCLASS32, Data: le},
	}
}

// PlatformByDir finds a platform by its dist directory name.
func PlatformByDir(dir string) (Platform, error) {
	var known []string
	for _, p := range Platforms() {
		if p.Dir == dir {
			return p, nil
		}
		known = append(known, p.Dir)
	}
	return Platform{}, fmt.Errorf("%q is not a tether platform (known: %s)", dir, strings.Join(known, " "))
}

// FeatureTag is a build tag that compiles an optional feature out of
// tether-slim, with the module path prefixes that must then be absent.
type FeatureTag struct {
	Tag     string
	Modules []string
}

// FeatureTags lists the tags tether-slim may be built with.
func FeatureTags() []FeatureTag {
	return []FeatureTag{
		// The Prometheus endpoint; protobuf only ever comes in through it.
		{Tag: "nometrics", Modules: []string{"github.com/prometheus/", "google.golang.org/protobuf"}},
	}
}

// FeatureTagsFor resolves a space- or comma-separated tag list.
func FeatureTagsFor(tags string) ([]FeatureTag, error) {
	var out []FeatureTag
	for _, name := range strings.FieldsFunc(tags, func(r rune) bool { return r == ' ' || r == ',' }) {
		found := false
		for _, ft := range FeatureTags() {
			if ft.Tag == name {
				out = append(out, ft)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("slim tag %q is unknown to buildcheck: add it to FeatureTags with the modules it removes", name)
		}
	}
	return out, nil
}
