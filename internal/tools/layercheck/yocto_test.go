//go:build layercheck

package layercheck

import (
	"bytes"
	"debug/elf"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated tether-go-mods.inc and tether-licenses.inc")

const modulePath = "github.com/tether-agent/tether"

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func layerDir(t *testing.T) string { return filepath.Join(repoRoot(t), "yocto", "meta-tether") }

func recipeDir(t *testing.T) string {
	return filepath.Join(layerDir(t), "recipes-connectivity", "tether")
}

func parse(t *testing.T, p string) *BBFile {
	t.Helper()
	f, err := ParseBBFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// one returns the single plain assignment of name in f.
func one(t *testing.T, f *BBFile, name string) string {
	t.Helper()
	var vals []string
	for _, st := range f.Assignments(name) {
		if len(st.Overrides) == 0 {
			vals = append(vals, st.Value)
		}
	}
	if len(vals) != 1 {
		t.Fatalf("%s: want exactly one plain assignment of %s, found %d", f.Path, name, len(vals))
	}
	return vals[0]
}

func TestYoctoLayerConf(t *testing.T) {
	f := parse(t, filepath.Join(layerDir(t), "conf", "layer.conf"))
	d := NewBBData()
	if err := d.Apply(f); err != nil {
		t.Fatal(err)
	}
	get := func(n string) string {
		v, err := d.Get(n)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	checks := []struct {
		name string
		ok   func(string) bool
		want string
	}{
		{"BBPATH", func(v string) bool { return strings.Contains(v, "${LAYERDIR}") }, `contains ${LAYERDIR}`},
		{"BBFILES", func(v string) bool {
			return strings.Contains(v, "${LAYERDIR}/recipes-*/*/*.bb") && strings.Contains(v, "${LAYERDIR}/recipes-*/*/*.bbappend")
		}, "the layer's recipes-*/*/*.bb and .bbappend"},
		{"BBFILE_COLLECTIONS", func(v string) bool { return strings.Fields(v)[0] == "tether" }, `"tether"`},
		{"BBFILE_PATTERN_tether", func(v string) bool { return v == "^${LAYERDIR}/" }, `"^${LAYERDIR}/"`},
		{"BBFILE_PRIORITY_tether", func(v string) bool { return regexp.MustCompile(`^[1-9][0-9]?$`).MatchString(v) }, "a small positive integer"},
		{"LAYERVERSION_tether", func(v string) bool { return regexp.MustCompile(`^[0-9]+$`).MatchString(v) }, "an integer"},
		{"LAYERDEPENDS_tether", func(v string) bool { return containsWord(v, "core") }, `contains "core"`},
		{"LAYERSERIES_COMPAT_tether", func(v string) bool { return containsWord(v, "scarthgap") && containsWord(v, "wrynose") }, "the LTS releases scarthgap and wrynose"},
	}
	for _, c := range checks {
		if v := get(c.name); !c.ok(v) {
			t.Errorf("layer.conf: %s = %q, want %s", c.name, v, c.want)
		}
	}
	// Every recipe the layer has must be matched by BBFILES.
	matches, err := filepath.Glob(filepath.Join(layerDir(t), "recipes-*", "*", "*.bb"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no recipes under recipes-*/*/ (err %v)", err)
	}
	for _, p := range []string{"README", "../README.md"} {
		if _, err := os.Stat(filepath.Join(layerDir(t), p)); err != nil {
			t.Errorf("layer documentation: %v", err)
		}
	}
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// TestYoctoMetadataSyntax parses every metadata file of the layer.
func TestYoctoMetadataSyntax(t *testing.T) {
	n := 0
	err := filepath.WalkDir(layerDir(t), func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Ext(p) {
		case ".bb", ".bbappend", ".inc", ".bbclass", ".conf":
			n++
			if _, err := ParseBBFile(p); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Fatalf("found only %d metadata files", n)
	}
}

func TestYoctoRecipe(t *testing.T) {
	dir := recipeDir(t)
	bb := parse(t, filepath.Join(dir, "tether_git.bb"))
	inc := parse(t, filepath.Join(dir, "tether.inc"))

	var requires []string
	for _, f := range []*BBFile{bb, inc} {
		for _, st := range f.Statements {
			if st.Kind == "require" || st.Kind == "include" {
				requires = append(requires, st.Value)
				if _, err := os.Stat(filepath.Join(dir, st.Value)); err != nil {
					t.Errorf("%s:%d: %s %s: %v", f.Path, st.Line, st.Kind, st.Value, err)
				}
			}
		}
	}
	for _, want := range []string{"tether.inc", "tether-go-mods.inc", "tether-licenses.inc"} {
		if !containsWord(strings.Join(requires, " "), want) {
			t.Errorf("the recipe does not require %s", want)
		}
	}
	inherits := strings.Join(inc.Inherits(), " ")
	for _, c := range []string{"go-mod", "systemd", "tether-go-mod-compat", "useradd"} {
		if !containsWord(inherits, c) {
			t.Errorf("tether.inc does not inherit %s", c)
		}
		if c == "tether-go-mod-compat" {
			if _, err := os.Stat(filepath.Join(layerDir(t), "classes-recipe", c+".bbclass")); err != nil {
				t.Error(err)
			}
		}
	}

	if v := one(t, inc, "GO_IMPORT"); v != modulePath {
		t.Errorf("GO_IMPORT = %q, want the module path %q", v, modulePath)
	}
	if v := one(t, inc, "GO_INSTALL"); v != "${GO_IMPORT}/cmd/tether" {
		t.Errorf("GO_INSTALL = %q, want only the daemon", v)
	}
	for _, name := range []string{"SUMMARY", "HOMEPAGE", "LIC_FILES_CHKSUM", "SRC_URI"} {
		if one(t, inc, name) == "" {
			t.Errorf("%s is empty", name)
		}
	}
	// LICENSE = tether's own, then (after tether-licenses.inc) := in the
	// syntax of the OE-core parsing it (TestYoctoLicenseSyntax).
	var lics []string
	for _, st := range inc.Assignments("LICENSE") {
		lics = append(lics, st.Op+" "+st.Value)
	}
	if want := []string{"= Apache-2.0", ":= ${@tether_license_syntax(d)}"}; !reflect.DeepEqual(lics, want) {
		t.Errorf("tether.inc LICENSE assignments %q, want %q (modules add theirs in tether-licenses.inc)", lics, want)
	}
	if !strings.Contains(one(t, inc, "SRC_URI"), "destsuffix=${GO_SRCURI_DESTSUFFIX}") {
		t.Error("SRC_URI must unpack the source to ${GO_SRCURI_DESTSUFFIX}")
	}
	if v := one(t, bb, "SRCREV"); v != "${TETHER_SRCREV}" {
		t.Errorf("SRCREV = %q, want ${TETHER_SRCREV}", v)
	}
	if len(bb.Assignments("TETHER_SRCREV")) != 1 || bb.Assignments("TETHER_SRCREV")[0].Op != "??=" {
		t.Error("TETHER_SRCREV must have a weak (??=) placeholder default, so local.conf can set it")
	}
	uri := ""
	for _, st := range inc.Assignments("TETHER_GIT_URI") {
		uri = st.Value
	}
	if uri != "git://github.com/tether-agent/tether.git;protocol=https;branch=main" {
		t.Errorf("TETHER_GIT_URI = %q", uri)
	}

	want := map[string]string{
		"SYSTEMD_SERVICE:${PN}": "tether.service",
		"RPROVIDES:${PN}":       "mender-connect",
		"RREPLACES:${PN}":       "mender-connect",
		"RCONFLICTS:${PN}":      "mender-connect",
		"CONFFILES:${PN}":       "${sysconfdir}/tether/tether.conf",
	}
	for key, val := range want {
		name, ov, _ := strings.Cut(key, ":")
		found := false
		for _, st := range inc.Assignments(name) {
			if strings.Join(st.Overrides, ":") == ov && containsWord(st.Value, val) {
				found = true
			}
		}
		if !found {
			t.Errorf("tether.inc: %s does not contain %s", key, val)
		}
	}
	for _, v := range []string{"TETHER_SHELL", "TETHER_SHELL_ARGUMENTS", "TETHER_USER", "TETHER_METRICS_LISTEN"} {
		a := inc.Assignments(v)
		if len(a) != 1 || a[0].Op != "??=" {
			t.Errorf("%s must have one weak (??=) default", v)
		}
	}
	if inc.Flags("PACKAGECONFIG")["metrics"] != ",nometrics" {
		t.Errorf(`PACKAGECONFIG[metrics] = %q, want ",nometrics" (the build tag that compiles the endpoint out)`, inc.Flags("PACKAGECONFIG")["metrics"])
	}
	// The installed files come from the source tree.
	for _, p := range []string{"systemd/tether.service", "systemd/tether.conf", "systemd/README.md"} {
		if _, err := os.Stat(filepath.Join(repoRoot(t), p)); err != nil {
			t.Errorf("do_install installs %s: %v", p, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "tether.inc"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"install -D -m 0755 ${B}/${GO_BUILD_BINDIR}/tether ${D}${bindir}/tether",
		"install -D -m 0600 ${B}/tether.conf ${D}${sysconfdir}/tether/tether.conf",
		"${D}${systemd_system_unitdir}/tether.service",
		`do_install[prefuncs] += "tether_write_config"`,
	} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("tether.inc lacks %q", want)
		}
	}
}

// TestYoctoGoModules regenerates tether-go-mods.inc and tether-licenses.inc
// the way go-mod-update-modules does and compares; -update rewrites them.
func TestYoctoGoModules(t *testing.T) {
	root := repoRoot(t)
	cache, err := UserModCache(root)
	if err != nil {
		t.Fatal(err)
	}
	modsPath := filepath.Join(recipeDir(t), "tether-go-mods.inc")
	licPath := filepath.Join(recipeDir(t), "tether-licenses.inc")
	known := map[string]string{}
	if _, entries, err := ParseLicensesInc(licPath); err == nil {
		for _, e := range entries {
			if e.SPDX != "Unknown" {
				known[e.MD5] = e.SPDX
			}
		}
	}
	mods, lics, err := GenerateIncs(root, cache, []string{"./cmd/tether"}, known)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		for p, s := range map[string]string{modsPath: mods, licPath: lics} {
			if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for p, want := range map[string]string{modsPath: mods, licPath: lics} {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s is stale for go.mod/go.sum and ./cmd/tether's imports; run `make layers-update` and review the diff.\nwant:\n%s", p, want)
		}
	}
	if strings.Contains(lics, "spdx=Unknown") {
		t.Errorf("%s: a module licence is not identified; set its spdx= by hand (the md5 then sticks on regeneration)", licPath)
	}
}

// TestYoctoLicences checks tether's own LIC_FILES_CHKSUM against the
// repository's LICENSE, and every module licence file against the module
// cache that do_fetch/do_unpack/do_compile produce.
func TestYoctoLicences(t *testing.T) {
	root := repoRoot(t)
	inc := parse(t, filepath.Join(recipeDir(t), "tether.inc"))
	lic := one(t, inc, "LIC_FILES_CHKSUM")
	m := regexp.MustCompile(`^file://src/\$\{GO_IMPORT\}/LICENSE;md5=([0-9a-f]{32})$`).FindStringSubmatch(lic)
	if m == nil {
		t.Fatalf("LIC_FILES_CHKSUM = %q, want file://src/${GO_IMPORT}/LICENSE;md5=...", lic)
	}
	sum, err := MD5File(filepath.Join(root, "LICENSE"))
	if err != nil {
		t.Fatalf("tether's licence file (the Apache-2.0 text, https://www.apache.org/licenses/LICENSE-2.0.txt): %v", err)
	}
	if sum != m[1] {
		t.Errorf("LICENSE md5 is %s, tether.inc says %s", sum, m[1])
	}

	license, entries, err := ParseLicensesInc(filepath.Join(recipeDir(t), "tether-licenses.inc"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.SPDX] = true
	}
	var want []string
	for n := range names {
		want = append(want, n)
	}
	sort.Slice(want, func(i, j int) bool { return strings.ToLower(want[i]) < strings.ToLower(want[j]) })
	if got := strings.TrimSpace(license); got != "AND "+strings.Join(want, " AND ") {
		t.Errorf("tether-licenses.inc: LICENSE += %q, want %q (the licences of the files listed)", got, "AND "+strings.Join(want, " AND "))
	}

	// Build the module cache from the pinned list only, extract the modules
	// as do_compile (go list -deps) does, and check each file.
	mods, err := ParseGoModsInc(filepath.Join(recipeDir(t), "tether-go-mods.inc"))
	if err != nil {
		t.Fatal(err)
	}
	cache := pinnedCache(t, root, mods)
	cmd := exec.Command("go", "list", "-modcacherw", "-deps", "./cmd/tether")
	cmd.Dir = root
	cmd.Env = GoEnv("GOMODCACHE="+cache, "GOPROXY=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go list -deps with only the pinned modules: %v\n%s", err, out)
	}
	for _, e := range entries {
		p := filepath.Join(cache, strings.TrimPrefix(e.Path, "pkg/mod/"))
		sum, err := MD5File(p)
		if err != nil {
			t.Errorf("LIC_FILES_CHKSUM %s: %v", e.Path, err)
			continue
		}
		if sum != e.MD5 {
			t.Errorf("LIC_FILES_CHKSUM %s: md5 %s, listed %s", e.Path, sum, e.MD5)
		}
	}
}

func pinnedCache(t *testing.T, root string, mods []GoModEntry) string {
	t.Helper()
	user, err := UserModCache(root)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "layercheck-pinned-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveModCache(dir) })
	if err := PopulateModCache(dir, user, mods); err != nil {
		t.Fatal(err)
	}
	return dir
}

var elfMachine = map[string]elf.Machine{"arm64": elf.EM_AARCH64, "arm": elf.EM_ARM, "amd64": elf.EM_X86_64, "386": elf.EM_386}

// TestYoctoStaticBuild evaluates the recipe's GOBUILDFLAGS for OE-core's qemu
// machines, runs the go command with them as do_compile does, offline, with
// a module cache holding only the pinned modules, and checks the ELF.
func TestYoctoStaticBuild(t *testing.T) {
	root := repoRoot(t)
	mods, err := ParseGoModsInc(filepath.Join(recipeDir(t), "tether-go-mods.inc"))
	if err != nil {
		t.Fatal(err)
	}
	cache := pinnedCache(t, root, mods)
	classDirs := []string{filepath.Join(layerDir(t), "classes-recipe")}
	recipe := filepath.Join(recipeDir(t), "tether_git.bb")

	type build struct {
		m        OEMachine
		pcRemove []string
	}
	var builds []build
	for _, m := range OEMachines {
		builds = append(builds, build{m: m})
	}
	// The metrics switch, on a 64-bit and a 32-bit machine.
	builds = append(builds, build{OEMachines[0], []string{"metrics"}}, build{OEMachines[1], []string{"metrics"}})

	out := t.TempDir()
	for _, b := range builds {
		name := b.m.Name
		if len(b.pcRemove) > 0 {
			name += "-no-" + strings.Join(b.pcRemove, "-")
		}
		t.Run(name, func(t *testing.T) {
			d, err := EvalRecipe(recipe, classDirs, b.m, b.pcRemove)
			if err != nil {
				t.Fatal(err)
			}
			get := func(n string) string {
				v, err := d.Get(n)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			if v := get("CGO_ENABLED"); v != "0" {
				t.Errorf("CGO_ENABLED = %q, want 0", v)
			}
			if v := get("GO_LINKSHARED"); v != "" {
				t.Errorf("GO_LINKSHARED = %q: go_do_compile would link against the shared Go runtime", v)
			}
			flags := get("GOBUILDFLAGS")
			args, err := ShellWords(flags)
			if err != nil {
				t.Fatal(err)
			}
			var modes []string
			tags := ""
			for _, a := range args {
				if strings.HasPrefix(a, "-buildmode=") {
					modes = append(modes, a)
				}
				if strings.HasPrefix(a, "-tags=") {
					tags = strings.TrimPrefix(a, "-tags=")
				}
			}
			if len(modes) != 1 || modes[0] != "-buildmode=exe" {
				t.Errorf("GOBUILDFLAGS build modes %v, want only -buildmode=exe", modes)
			}
			wantTags := ""
			if len(b.pcRemove) > 0 {
				wantTags = "nometrics"
			}
			if tags != wantTags {
				t.Errorf("build tags %q, want %q", tags, wantTags)
			}
			t.Logf("GOBUILDFLAGS = %s", flags)

			bin := filepath.Join(out, name)
			cmdArgs := append([]string{"build"}, args...)
			cmdArgs = append(cmdArgs, "-o", bin, "./cmd/tether")
			cmd := exec.Command("go", cmdArgs...)
			cmd.Dir = root
			env := []string{"GOMODCACHE=" + cache, "GOPROXY=off", "GOARCH=" + b.m.GOARCH, "CGO_ENABLED=" + get("CGO_ENABLED"), "GOENV=off"}
			if b.m.GOARM != "" {
				env = append(env, "GOARM="+b.m.GOARM)
			}
			if b.m.GO386 != "" {
				env = append(env, "GO386="+b.m.GO386)
			}
			cmd.Env = GoEnv(env...)
			if outp, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(cmdArgs, " "), err, outp)
			}
			if err := CheckStaticExec(bin, elfMachine[b.m.GOARCH]); err != nil {
				t.Error(err)
			}
			if b.m.GOARCH == "amd64" && len(b.pcRemove) == 0 {
				v, err := exec.Command(bin, "version").Output()
				if err != nil {
					t.Fatalf("%s version: %v", bin, err)
				}
				if !strings.HasPrefix(string(v), get("PV")+"\t") {
					t.Errorf("tether version printed %q, want the recipe's PV %q stamped in", v, get("PV"))
				}
			}
		})
	}
}

// TestYoctoLicenseSyntax evaluates the recipe's LICENSE for each OE-core it
// meets: "&" for scarthgap and wrynose (to whose parser "AND" is a licence
// name), SPDX "AND" without any "&" or "|" after wrynose (where the old
// operators draw "LICENSE is using an old syntax"), and in both exactly
// tether's Apache-2.0 plus the licences of the module files listed.
func TestYoctoLicenseSyntax(t *testing.T) {
	_, entries, err := ParseLicensesInc(filepath.Join(recipeDir(t), "tether-licenses.inc"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"Apache-2.0": true}
	for _, e := range entries {
		want[e.SPDX] = true
	}
	licName := regexp.MustCompile(`^[a-zA-Z0-9.+_\-]+$`) // OE-core's license_pattern before SPDX
	classDirs := []string{filepath.Join(layerDir(t), "classes-recipe")}
	recipe := filepath.Join(recipeDir(t), "tether_git.bb")
	for _, oe := range []OECore{OECoreLTS, OECoreMaster} {
		t.Run(oe.Name, func(t *testing.T) {
			d, err := EvalRecipeFor(oe, recipe, classDirs, OEMachines[0], nil)
			if err != nil {
				t.Fatal(err)
			}
			lic, err := d.Get("LICENSE")
			if err != nil {
				t.Fatal(err)
			}
			op := "&"
			if oe.SPDXLicense {
				op = "AND"
				if strings.ContainsAny(lic, "&|") {
					t.Errorf("LICENSE = %q: OE-core warns about the old syntax", lic)
				}
			}
			got := map[string]bool{}
			words := strings.Fields(lic)
			for i, w := range words {
				if i%2 == 1 {
					if w != op {
						t.Errorf("LICENSE = %q: operator %q at word %d, want %q", lic, w, i, op)
					}
					continue
				}
				if !licName.MatchString(w) || w == "AND" || w == "OR" {
					t.Errorf("LICENSE = %q: %q is not a licence name", lic, w)
				}
				got[w] = true
			}
			if len(words)%2 == 0 {
				t.Errorf("LICENSE = %q ends with an operator", lic)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("LICENSE = %q: licences %v, want %v", lic, got, want)
			}
		})
	}
}
