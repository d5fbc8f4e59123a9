package buildcheck

import (
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"strings"
)

// Sizes is where the bytes of an unstripped binary go, from its symbol
// table (what `go tool nm -size` shows), counting only symbols that occupy
// the file: zero-initialised memory (.bss, .noptrbss) costs no flash.
type Sizes struct {
	// Sections holds the size of every section loaded from the file.
	Sections map[string]uint64
	// Packages holds the bytes of symbols by Go package path; linker data
	// not owned by one package is under a parenthesised name.
	Packages map[string]uint64
	// Modules is Packages summed by module: "std", the main module or a
	// dependency.
	Modules map[string]uint64
}

// MeasureSizes reads the symbol table and build info of the unstripped
// binary at path.
func MeasureSizes(path string) (*Sizes, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: reading Go build info: %w", path, err)
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening binary: %w", err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%s: reading the symbol table (was it built without -s?): %w", path, err)
	}
	sz := &Sizes{Sections: map[string]uint64{}, Packages: map[string]uint64{}, Modules: map[string]uint64{}}
	inFile := make([]bool, len(f.Sections))
	for i, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Type != elf.SHT_NOBITS {
			inFile[i] = true
			sz.Sections[s.Name] = s.Size
		}
	}
	for _, s := range syms {
		if int(s.Section) >= len(inFile) || !inFile[s.Section] || s.Size == 0 {
			continue
		}
		pkg := PackageOf(s.Name)
		sz.Packages[pkg] += s.Size
		sz.Modules[ModuleOf(pkg, bi)] += s.Size
	}
	return sz, nil
}

// PackageOf returns the import path of the package a Go linker symbol
// belongs to: "net/http" for net/http.(*Client).Do. The linker's own data
// goes under "(types)" or "(linker data)".
func PackageOf(sym string) string {
	switch {
	case strings.HasPrefix(sym, "type:"):
		return "(types)"
	case strings.HasPrefix(sym, "go:"):
		return "(linker data)"
	}
	// Type arguments may hold other packages' paths.
	if i := strings.IndexByte(sym, '['); i >= 0 {
		sym = sym[:i]
	}
	// The linker escapes dots in the last path element (gopkg.in/yaml%2ev3),
	// so the first dot after the last slash ends the path.
	slash := strings.LastIndexByte(sym, '/')
	if dot := strings.IndexByte(sym[slash+1:], '.'); dot >= 0 {
		sym = sym[:slash+1+dot]
	}
	return strings.ReplaceAll(sym, "%2e", ".")
}

// ModuleOf returns the module of pkg as recorded in bi: the main module, a
// dependency, "std" for the standard library (including its vendored
// golang.org/x packages), or pkg itself for the linker's parenthesised
// names.
func ModuleOf(pkg string, bi *buildinfo.BuildInfo) string {
	if strings.HasPrefix(pkg, "(") {
		return pkg
	}
	if pkg == "main" {
		return bi.Main.Path
	}
	best := ""
	for _, m := range append([]string{bi.Main.Path}, depPaths(bi)...) {
		if (pkg == m || strings.HasPrefix(pkg, m+"/")) && len(m) > len(best) {
			best = m
		}
	}
	if best != "" {
		return best
	}
	if first, _, _ := strings.Cut(pkg, "/"); !strings.Contains(first, ".") {
		return "std"
	}
	return "(unknown module)"
}

func depPaths(bi *buildinfo.BuildInfo) []string {
	out := make([]string, 0, len(bi.Deps))
	for _, d := range bi.Deps {
		out = append(out, d.Path)
	}
	return out
}
