package layercheck

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// The parts of OE-core's classes (wrynose and scarthgap agree on all of
// them) that decide the go command line of do_compile, in BitBake syntax.
// yocto/README.md records the comparison of what BBData computes from these
// with `bitbake -e` on both releases.
const oeGoClass = `
GO_DYNLINK = ""
GO_DYNLINK:arm ?= "1"
GO_DYNLINK:aarch64 ?= "1"
GO_DYNLINK:x86 ?= "1"
GO_DYNLINK:x86-64 ?= "1"
GO_PARALLEL_BUILD ?= "-p 2"
GO_LINKSHARED ?= "${@'-linkshared' if d.getVar('GO_DYNLINK') else ''}"
GO_RPATH = "${@'-r ${libdir}/go/pkg/${TARGET_GOTUPLE}_dynlink' if d.getVar('GO_DYNLINK') else ''}"
GO_EXTLDFLAGS ?= "${HOST_CC_ARCH}${TOOLCHAIN_OPTIONS} ${GO_RPATH_LINK} ${LDFLAGS}"
GO_LINKMODE ?= ""
GO_EXTRA_LDFLAGS ?= ""
GO_LINUXLOADER ?= "-I ${@get_linuxloader(d)}"
GO_LDFLAGS ?= '-ldflags="${GO_RPATH} ${GO_LINKMODE} ${GO_LINUXLOADER} ${GO_EXTRA_LDFLAGS} -extldflags '${GO_EXTLDFLAGS}'"'
export GOBUILDFLAGS ?= "-v ${GO_LDFLAGS} -trimpath"
GOBUILDFLAGS:prepend:task-compile = "${GO_PARALLEL_BUILD} "
export CGO_ENABLED ?= "1"
export GOPROXY ??= "https://proxy.golang.org,direct"
`

const oeGoModClass = `
GOBUILDFLAGS:append = " -modcacherw"
`

// OEMachine is what an OE machine contributes to the go build.
type OEMachine struct {
	Name    string // MACHINE
	Arch    string // TRANSLATED_TARGET_ARCH override
	GOARCH  string
	GOARM   string
	GO386   string
	Loader  string // get_linuxloader()
	GoTuple string // TARGET_GOTUPLE
	CCFlags string // HOST_CC_ARCH, any flags: the internal linker ignores them
	Pie     bool   // whether go.bbclass appends -buildmode=pie
}

// OEMachines are the qemu machines of OE-core the checks build for.
var OEMachines = []OEMachine{
	{Name: "qemuarm64", Arch: "aarch64", GOARCH: "arm64", Loader: "/lib/ld-linux-aarch64.so.1", GoTuple: "linux_arm64", CCFlags: "-mcpu=cortex-a57+crc", Pie: true},
	{Name: "qemuarm", Arch: "arm", GOARCH: "arm", GOARM: "7", Loader: "/lib/ld-linux-armhf.so.3", GoTuple: "linux_arm", CCFlags: "-march=armv7ve -mthumb -mfpu=neon-vfpv4 -mfloat-abi=hard -mcpu=cortex-a15", Pie: true},
	{Name: "qemux86-64", Arch: "x86-64", GOARCH: "amd64", Loader: "/lib64/ld-linux-x86-64.so.2", GoTuple: "linux_amd64", CCFlags: "-m64 -march=x86-64-v3", Pie: true},
	{Name: "qemux86", Arch: "x86", GOARCH: "386", GO386: "sse2", Loader: "/lib/ld-linux.so.2", GoTuple: "linux_386", CCFlags: "-m32 -march=core2", Pie: true},
}

// EvalRecipe evaluates a recipe (and what it requires and inherits) for m
// with the given PACKAGECONFIG removals, as far as BBData models BitBake.
// Classes other than go and go-mod are read from classDirs when found there
// (the layer's own classes) and otherwise only recorded.
func EvalRecipe(recipe string, classDirs []string, m OEMachine, pcRemove []string) (*BBData, error) {
	return EvalRecipeFor(OECoreLTS, recipe, classDirs, m, pcRemove)
}

// OECore is what differs between the OE-core releases the recipe meets.
type OECore struct {
	Name string
	// SPDXLicense: LICENSE is parsed as an SPDX expression (AND, OR) and
	// the old "&" draws a warning (OE-core after wrynose, which has
	// lib/oe/spdx_license.py); otherwise only "&" and "|" are operators.
	SPDXLicense bool
}

// The OE-core releases the checks evaluate for.
var (
	OECoreLTS    = OECore{Name: "scarthgap/wrynose"}
	OECoreMaster = OECore{Name: "master (after wrynose)", SPDXLicense: true}
)

// EvalRecipeFor is EvalRecipe against the given OE-core.
func EvalRecipeFor(oe OECore, recipe string, classDirs []string, m OEMachine, pcRemove []string) (*BBData, error) {
	d := NewBBData("class-target", "linux", m.Arch, "task-compile", "forcevariable")
	// tether.inc's tether_license_syntax(d).
	d.Python["tether_license_syntax(d)"] = func(d *BBData) (string, error) {
		lic, err := d.Get("LICENSE")
		if err != nil {
			return "", err
		}
		if oe.SPDXLicense {
			return regexp.MustCompile(`\s*&\s*`).ReplaceAllString(lic, " AND "), nil
		}
		return regexp.MustCompile(`\s+AND\s+`).ReplaceAllString(lic, " & "), nil
	}
	d.Python["'-linkshared' if d.getVar('GO_DYNLINK') else ''"] = func(d *BBData) (string, error) {
		if v, err := d.Get("GO_DYNLINK"); err != nil || v == "" {
			return "", err
		}
		return "-linkshared", nil
	}
	d.Python["'-r ${libdir}/go/pkg/${TARGET_GOTUPLE}_dynlink' if d.getVar('GO_DYNLINK') else ''"] = func(d *BBData) (string, error) {
		if v, err := d.Get("GO_DYNLINK"); err != nil || v == "" {
			return "", err
		}
		return "-r /usr/lib/go/pkg/" + m.GoTuple + "_dynlink", nil
	}
	d.Python["get_linuxloader(d)"] = func(*BBData) (string, error) { return m.Loader, nil }
	d.Python["','.join(d.getVar('PACKAGECONFIG_CONFARGS').split())"] = func(d *BBData) (string, error) {
		v, err := d.Get("PACKAGECONFIG_CONFARGS")
		return strings.Join(strings.Fields(v), ","), err
	}
	for k, v := range map[string]string{
		"HOST_CC_ARCH": m.CCFlags, "TOOLCHAIN_OPTIONS": " --sysroot=/recipe-sysroot",
		"LDFLAGS": "-Wl,-O1 -Wl,--as-needed", "libdir": "/usr/lib", "TARGET_GOTUPLE": m.GoTuple,
		"GO_RPATH_LINK": "",
	} {
		if err := d.Set(k, nil, "=", v); err != nil {
			return nil, err
		}
	}
	for _, r := range pcRemove {
		if err := d.Set("PACKAGECONFIG", []string{"remove"}, "=", r); err != nil {
			return nil, err
		}
	}
	pcFlags := map[string]string{}
	if err := evalFile(d, recipe, classDirs, pcFlags, 0); err != nil {
		return nil, err
	}
	// go.bbclass's anonymous python, which runs after the recipe is parsed.
	if m.Pie {
		if err := d.Set("GOBUILDFLAGS", nil, ".=", " -buildmode=pie"); err != nil {
			return nil, err
		}
	}
	// base.bbclass computes PACKAGECONFIG_CONFARGS after parsing as well.
	pc, err := d.Get("PACKAGECONFIG")
	if err != nil {
		return nil, err
	}
	if err := d.Set("PACKAGECONFIG_CONFARGS", nil, "=", PackageConfigArgs(pcFlags, strings.Fields(pc))); err != nil {
		return nil, err
	}
	return d, nil
}

func evalFile(d *BBData, file string, classDirs []string, pcFlags map[string]string, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%s: requires nested too deep", file)
	}
	f, err := ParseBBFile(file)
	if err != nil {
		return err
	}
	for _, st := range f.Statements {
		switch st.Kind {
		case "assign":
			if err := d.Set(st.Var, st.Overrides, st.Op, st.Value); err != nil {
				return fmt.Errorf("%s:%d: %w", file, st.Line, err)
			}
		case "flag":
			if st.Var == "PACKAGECONFIG" {
				pcFlags[st.Flag] = st.Value
			}
		case "require", "include":
			if strings.Contains(st.Value, "$") {
				continue
			}
			if err := evalFile(d, filepath.Join(filepath.Dir(file), st.Value), classDirs, pcFlags, depth+1); err != nil {
				return err
			}
		case "inherit":
			for _, c := range strings.Fields(st.Value) {
				if err := inheritClass(d, c, classDirs, pcFlags, depth); err != nil {
					return fmt.Errorf("%s:%d: %w", file, st.Line, err)
				}
			}
		}
	}
	return nil
}

func inheritClass(d *BBData, class string, classDirs []string, pcFlags map[string]string, depth int) error {
	switch class {
	case "go":
		return applyText(d, "go.bbclass", oeGoClass)
	case "go-mod":
		if err := applyText(d, "go.bbclass", oeGoClass); err != nil {
			return err
		}
		return applyText(d, "go-mod.bbclass", oeGoModClass)
	}
	for _, dir := range classDirs {
		p := filepath.Join(dir, class+".bbclass")
		if _, err := ParseBBFile(p); err == nil {
			return evalFile(d, p, classDirs, pcFlags, depth+1)
		}
	}
	return nil
}

func applyText(d *BBData, name, text string) error {
	f, err := ParseBBText(name, text)
	if err != nil {
		return err
	}
	return d.Apply(f)
}
