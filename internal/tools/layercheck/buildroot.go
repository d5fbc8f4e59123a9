package layercheck

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// BuildrootLicenseBlock is the generated part of tether.mk: TETHER_LICENSE
// and TETHER_LICENSE_FILES for tether and every module licence the Yocto
// list names, at the paths `go mod vendor` puts them.
func BuildrootLicenseBlock(entries []LicEntry) (string, []string, error) {
	type mod struct{ path, spdx, file string }
	var mods []mod
	re := regexp.MustCompile(`^pkg/mod/(.+)@[^/]+/(.+)$`)
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Path)
		if m == nil {
			return "", nil, fmt.Errorf("licence path %s is not pkg/mod/<module>@<version>/<file>", e.Path)
		}
		mods = append(mods, mod{path: UnescapeModulePath(m[1]), spdx: e.SPDX, file: "vendor/" + UnescapeModulePath(m[1]) + "/" + m[2]})
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].file < mods[j].file })
	var b strings.Builder
	b.WriteString("TETHER_LICENSE = Apache-2.0")
	for _, m := range mods {
		fmt.Fprintf(&b, ", \\\n\t%s (%s)", m.spdx, m.path)
	}
	b.WriteString("\nTETHER_LICENSE_FILES = LICENSE")
	files := []string{"LICENSE"}
	for _, m := range mods {
		fmt.Fprintf(&b, " \\\n\t%s", m.file)
		files = append(files, m.file)
	}
	b.WriteString("\n")
	return b.String(), files, nil
}

// ReplaceGenerated swaps the text between the BEGIN and END generated
// marker lines of a file's content.
func ReplaceGenerated(content, block string) (string, error) {
	begin := strings.Index(content, "# BEGIN generated")
	if begin < 0 {
		return "", fmt.Errorf("no \"# BEGIN generated\" marker")
	}
	nl := strings.Index(content[begin:], "\n# END generated")
	if nl < 0 {
		return "", fmt.Errorf("no \"# END generated\" marker")
	}
	// Keep the BEGIN comment (which may span lines: up to the first line
	// not starting with "#").
	headEnd := begin
	for {
		e := strings.Index(content[headEnd:], "\n")
		if e < 0 {
			return "", fmt.Errorf("unterminated marker")
		}
		headEnd += e + 1
		if !strings.HasPrefix(content[headEnd:], "# ") || strings.HasPrefix(content[headEnd:], "# END generated") {
			break
		}
	}
	end := begin + nl + 1
	return content[:headEnd] + block + content[end:], nil
}

// pkgGolangBuild is the command line of Buildroot's package/pkg-golang.mk
// for a target package (<PKG>_BUILD_CMDS), from the values GNU make gives
// the package's variables; buildroot/README.md records the comparison with
// a real Buildroot tree.
func PkgGolangBuildArgs(ldflags, tags, out, target string) []string {
	return []string{"build", "-v", "-ldflags", ldflags, "-modcacherw", "-tags", tags, "-trimpath", "-p", "2", "-buildvcs=false", "-o", out, target}
}
