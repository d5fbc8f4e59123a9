package buildcheck

import (
	"bytes"
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// distUnderTest says what TestBinaries inspects.
type distUnderTest struct {
	root      string     // the dist directory
	platforms []Platform // the platforms that must be in it
	mocks     bool       // whether the QEMU platforms must carry the test doubles
	slimTags  string
	version   string // the -X version stamp every tether binary must carry
}

// TestBinaries checks every binary in $TETHER_DIST (what `make cross`
// built) or, without it, a full and a slim tether freshly built for the
// host's architecture, so that a plain `go test ./...` checks them too.
func TestBinaries(t *testing.T) {
	d := locateDist(t)
	for _, p := range d.platforms {
		t.Run(p.Dir, func(t *testing.T) {
			t.Parallel()
			checkPlatform(t, d, p)
		})
	}
	t.Run("checks-catch-defects", func(t *testing.T) {
		checkMutations(t, filepath.Join(d.root, d.platforms[0].Dir, "tether"), d.platforms[0])
	})
}

func locateDist(t *testing.T) distUnderTest {
	root := os.Getenv("TETHER_DIST")
	if root == "" {
		return buildHost(t)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		t.Fatalf("TETHER_DIST=%s is not a directory (%v): run `make cross` (or make cross-one) first", root, err)
	}
	d := distUnderTest{root: root, mocks: true, slimTags: os.Getenv("TETHER_SLIM_TAGS"), version: os.Getenv("TETHER_VERSION")}
	if d.slimTags == "" || d.version == "" {
		t.Fatal("with TETHER_DIST set, TETHER_SLIM_TAGS and TETHER_VERSION must say how dist was built: run `make cross-verify`")
	}
	if names := strings.Fields(os.Getenv("TETHER_PLATFORMS")); len(names) > 0 {
		for _, n := range names {
			p, err := PlatformByDir(n)
			if err != nil {
				t.Fatalf("TETHER_PLATFORMS: %v", err)
			}
			d.platforms = append(d.platforms, p)
		}
	} else {
		d.platforms = Platforms()
	}
	// Anything else in dist would ship unchecked.
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatalf("reading dist: %v", err)
	}
	for _, e := range entries {
		if e.Name() == "SHA256SUMS" {
			continue
		}
		if _, err := PlatformByDir(e.Name()); err != nil || !e.IsDir() {
			t.Errorf("dist holds %s, which is not a platform directory: %v", e.Name(), err)
		}
	}
	return d
}

// buildHost builds tether and tether-slim for linux on the host's
// architecture (linux/amd64 on hosts tether does not ship for), the way
// mk/cross.mk does, into a temporary dist directory.
func buildHost(t *testing.T) distUnderTest {
	p, err := PlatformByDir("linux-" + runtime.GOARCH)
	if runtime.GOARCH == "arm" {
		p, err = PlatformByDir("linux-armv7")
	}
	if err != nil {
		p, _ = PlatformByDir("linux-amd64")
	}
	var nonce [6]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		t.Fatal(err)
	}
	d := distUnderTest{
		root: t.TempDir(), platforms: []Platform{p}, slimTags: "nometrics",
		version: "buildcheck-" + hex.EncodeToString(nonce[:]),
	}
	const pkg = "github.com/tether-agent/tether/internal/version"
	ldflags := strings.Join([]string{"-s", "-w", "-buildid=",
		"-X", pkg + ".Version=" + d.version}, " ")
	for _, b := range []struct{ out, tags string }{{"tether", ""}, {"tether-slim", d.slimTags}} {
		out := filepath.Join(d.root, p.Dir, b.out)
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-tags", b.tags, "-o", out, "./cmd/tether")
		cmd.Dir = filepath.Join("..", "..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.GOOS, "GOARCH="+p.GOARCH, "GOARM="+p.GOARM, "GOMIPS="+p.GOMIPS)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", b.out, err, msg)
		}
	}
	return d
}

// binSpec is one binary expected in a platform directory.
type binSpec struct {
	name    string
	tags    []FeatureTag
	stamped bool // carries the -X version stamps (the mocks do not link internal/version)
}

func checkPlatform(t *testing.T, d distUnderTest, p Platform) {
	dir := filepath.Join(d.root, p.Dir)
	slimTags, err := FeatureTagsFor(d.slimTags)
	if err != nil {
		t.Fatal(err)
	}
	bins := []binSpec{{"tether", nil, true}, {"tether-slim", slimTags, true}}
	if d.mocks && p.Mocks {
		bins = append(bins, binSpec{"mock-mender", nil, false}, binSpec{"mock-authd", nil, false})
	}
	for _, b := range bins {
		path := filepath.Join(dir, b.name)
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s is missing: %v", b.name, err)
			continue
		}
		if err := CheckELF(path, p); err != nil {
			t.Errorf("%v", err)
		}
		if _, err := CheckBuildInfo(path, p, b.tags); err != nil {
			t.Errorf("%v", err)
		}
		if !b.stamped {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Only Version: the linker drops -X values of variables nothing
		// reads, and tether does not print Commit or Date (yet).
		if !bytes.Contains(data, []byte(d.version)) {
			t.Errorf("%s: the version stamp %q (from -ldflags -X) is not in the binary", path, d.version)
		}
	}
	checkModules(t, dir, p, slimTags)
	if p.GOOS == runtime.GOOS && p.GOARCH == runtime.GOARCH {
		// The one platform this machine runs: the stamp must reach the output.
		out, err := exec.Command(filepath.Join(dir, "tether"), "version").Output()
		if err != nil {
			t.Fatalf("tether version: %v", err)
		}
		if !strings.HasPrefix(string(out), d.version+"\t") {
			t.Errorf("tether version printed %q, want it to start with %q", out, d.version)
		}
	}
}

// checkModules: tether-slim must lack every module its tags compile out,
// and the full build must have them, or the check proves nothing.
func checkModules(t *testing.T, dir string, p Platform, tags []FeatureTag) {
	full, err := CheckBuildInfo(filepath.Join(dir, "tether"), p, nil)
	if err != nil {
		t.Fatalf("%v", err)
	}
	slim, err := CheckBuildInfo(filepath.Join(dir, "tether-slim"), p, tags)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := CheckBuildInfo(filepath.Join(dir, "tether"), p, tags); err == nil {
		t.Error("CheckBuildInfo took the full build for a slim one")
	}
	for _, ft := range tags {
		if got := Modules(slim, ft.Modules); len(got) > 0 {
			t.Errorf("tether-slim (tag %s) still links %v", ft.Tag, got)
		}
		if got := Modules(full, ft.Modules); len(got) == 0 {
			t.Errorf("the full tether links none of %v, so tag %s removes nothing: is the feature wired in?", ft.Modules, ft.Tag)
		}
	}
}

// checkMutations damages copies of a good binary in the ways the checks
// exist for, and requires each to be caught.
func checkMutations(t *testing.T, good string, p Platform) {
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckELF(good, p); err != nil {
		t.Fatalf("the unmodified binary must pass: %v", err)
	}
	if p.Data != elf.ELFDATA2LSB {
		t.Fatalf("%s: the mutations assume a little-endian file", p.Dir)
	}
	is64 := p.Class == elf.ELFCLASS64
	le := binary.LittleEndian
	otherMachine := elf.EM_X86_64
	if p.Machine == elf.EM_X86_64 {
		otherMachine = elf.EM_AARCH64
	}
	// Bits whose flip the platform's e_flags check must notice.
	flagBits := uint32(0x400) // arm: claims hard float; elsewhere flags must be 0
	switch p.GOARCH {
	case "mips", "mipsle":
		flagBits = 0x3000 // O32 becomes EABI64
	case "riscv64":
		flagBits = 0x6 // double-float becomes single-float
	}
	phoff := int(le.Uint32(orig[0x1c:]))
	flagsOff := 0x24
	if is64 {
		phoff = int(le.Uint64(orig[0x20:]))
		flagsOff = 0x30
	}
	cases := []struct {
		name   string
		mutate func(b []byte)
		want   string
	}{
		{"other machine", func(b []byte) { le.PutUint16(b[0x12:], uint16(otherMachine)) }, "machine"},
		{"PIE", func(b []byte) { le.PutUint16(b[0x10:], 3) }, "ET_DYN"},
		{"interpreter", func(b []byte) { le.PutUint32(b[phoff:], 3) }, "PT_INTERP"},
		{"dynamic", func(b []byte) { le.PutUint32(b[phoff:], 2) }, "PT_DYNAMIC"},
		{"float ABI flags", func(b []byte) { le.PutUint32(b[flagsOff:], le.Uint32(b[flagsOff:])^flagBits) }, "e_flags"},
		{"other class", func(b []byte) { b[4] ^= 3 }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			c.mutate(b)
			path := filepath.Join(t.TempDir(), "tether")
			if err := os.WriteFile(path, b, 0o755); err != nil {
				t.Fatal(err)
			}
			err := CheckELF(path, p)
			if err == nil {
				t.Fatal("CheckELF accepted the damaged binary")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}
