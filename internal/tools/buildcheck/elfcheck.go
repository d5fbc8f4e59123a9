package buildcheck

import (
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ELF header flags the checks read (values from the ARM, MIPS and RISC-V
// ELF ABI supplements; debug/elf does not name them).
const (
	armEABIMask      = 0xff000000
	armEABIVer5      = 0x05000000
	armABIFloatSoft  = 0x00000200
	armABIFloatHard  = 0x00000400
	mipsArchMask     = 0xf0000000
	mipsArch32       = 0x50000000
	mipsABIMask      = 0x0000f000
	mipsABIO32       = 0x00001000
	mipsFPABISoft    = 3 // Val_GNU_MIPS_ABI_FP_SOFT in .MIPS.abiflags
	riscvFloatABI    = 0x0006
	riscvFloatDouble = 0x0004
)

// CheckELF reports every way the binary at path falls short of a static,
// stripped, non-PIE executable for p. Nil means it is one.
func CheckELF(path string, p Platform) error {
	r, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening binary: %w", err)
	}
	defer r.Close()
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}

	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	if f.Class != p.Class {
		bad("ELF class %v, want %v", f.Class, p.Class)
	}
	if f.Data != p.Data {
		bad("byte order %v, want %v", f.Data, p.Data)
	}
	if f.Machine != p.Machine {
		bad("machine %v, want %v", f.Machine, p.Machine)
	}
	// A PIE is ET_DYN; it would need relocating at start-up for nothing.
	if f.Type != elf.ET_EXEC {
		bad("type %v, want %v (position-dependent executable)", f.Type, elf.ET_EXEC)
	}
	for _, prog := range f.Progs {
		switch prog.Type {
		case elf.PT_INTERP:
			bad("has a PT_INTERP program header: it needs a dynamic loader on the device")
		case elf.PT_DYNAMIC:
			bad("has a PT_DYNAMIC program header: it is dynamically linked")
		}
	}
	for _, s := range f.Sections {
		switch {
		case s.Type == elf.SHT_DYNAMIC || s.Name == ".dynamic" || s.Name == ".interp" || s.Name == ".dynsym":
			bad("has section %s: it is dynamically linked", s.Name)
		case s.Type == elf.SHT_SYMTAB:
			bad("has a symbol table (%s): not stripped (-s)", s.Name)
		case strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_"):
			bad("has DWARF section %s: not stripped (-w)", s.Name)
		}
	}
	if err := checkFlags(f, r, p); err != nil {
		bad("%v", err)
	}
	return errors.Join(errs...)
}

// checkFlags checks the machine-specific ABI bits: what a device's kernel
// and loader look at before running the file.
func checkFlags(f *elf.File, r io.ReaderAt, p Platform) error {
	flags, err := headerFlags(f, r)
	if err != nil {
		return err
	}
	switch p.GOARCH {
	case "arm":
		if flags&armEABIMask != armEABIVer5 {
			return fmt.Errorf("e_flags %#x: EABI version %d, want 5", flags, flags>>24)
		}
		// Go calls no C, so it claims neither float ABI and runs on both
		// armel and armhf userlands; a claim would make loaders choose.
		if flags&(armABIFloatSoft|armABIFloatHard) != 0 {
			return fmt.Errorf("e_flags %#x claims a float ABI", flags)
		}
	case "mips", "mipsle":
		if flags&mipsArchMask != mipsArch32 || flags&mipsABIMask != mipsABIO32 {
			return fmt.Errorf("e_flags %#x: want MIPS32 and the O32 ABI", flags)
		}
		fp, err := mipsFPABI(f)
		if err != nil {
			return err
		}
		if p.GOMIPS == "softfloat" && fp != mipsFPABISoft {
			return fmt.Errorf(".MIPS.abiflags fp_abi %d, want %d (soft float: no FPU needed)", fp, mipsFPABISoft)
		}
		if p.GOMIPS != "softfloat" && fp == mipsFPABISoft {
			return fmt.Errorf(".MIPS.abiflags says soft float but GOMIPS is %q", p.GOMIPS)
		}
	case "riscv64":
		if flags&riscvFloatABI != riscvFloatDouble {
			return fmt.Errorf("e_flags %#x: want the double-float ABI (lp64d)", flags)
		}
	default:
		if flags != 0 {
			return fmt.Errorf("e_flags %#x, want 0", flags)
		}
	}
	return nil
}

// headerFlags reads e_flags, which debug/elf skips.
func headerFlags(f *elf.File, r io.ReaderAt) (uint32, error) {
	// e_flags follows e_entry, e_phoff and e_shoff, which are words of the
	// class's size.
	off := int64(0x24)
	if f.Class == elf.ELFCLASS64 {
		off = 0x30
	}
	var b [4]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return 0, fmt.Errorf("reading e_flags: %w", err)
	}
	return f.ByteOrder.Uint32(b[:]), nil
}

// mipsFPABI returns the fp_abi byte of .MIPS.abiflags.
func mipsFPABI(f *elf.File) (byte, error) {
	s := f.Section(".MIPS.abiflags")
	if s == nil {
		return 0, errors.New("no .MIPS.abiflags section")
	}
	b, err := s.Data()
	if err != nil {
		return 0, fmt.Errorf("reading .MIPS.abiflags: %w", err)
	}
	if len(b) < 8 {
		return 0, fmt.Errorf(".MIPS.abiflags is %d bytes, want 24", len(b))
	}
	return b[7], nil
}

// CheckBuildInfo reports how the build recorded in the binary differs from
// a cgo-free, trimmed, non-PIE build for p with exactly the given feature
// tags (nil for the full build). It returns the build info for further
// checks.
func CheckBuildInfo(path string, p Platform, tags []FeatureTag) (*buildinfo.BuildInfo, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: reading Go build info: %w", path, err)
	}
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	want := map[string]string{
		"GOOS": p.GOOS, "GOARCH": p.GOARCH, "CGO_ENABLED": "0",
		"-trimpath": "true", "-buildmode": "exe",
	}
	if p.GOARM != "" {
		want["GOARM"] = p.GOARM
	}
	if p.GOMIPS != "" {
		want["GOMIPS"] = p.GOMIPS
	}
	var errs []error
	for k, v := range want {
		if set[k] != v {
			errs = append(errs, fmt.Errorf("%s: build setting %s=%q, want %q", path, k, set[k], v))
		}
	}
	have := strings.Split(set["-tags"], ",")
	for _, ft := range FeatureTags() {
		wanted := false
		for _, t := range tags {
			wanted = wanted || t.Tag == ft.Tag
		}
		if contains(have, ft.Tag) != wanted {
			errs = append(errs, fmt.Errorf("%s: build tags %q, want %s included: %v", path, set["-tags"], ft.Tag, wanted))
		}
	}
	return bi, errors.Join(errs...)
}

// Modules lists the dependency modules of bi whose path starts with one of
// the prefixes.
func Modules(bi *buildinfo.BuildInfo, prefixes []string) []string {
	var out []string
	for _, d := range bi.Deps {
		for _, pre := range prefixes {
			if strings.HasPrefix(d.Path, pre) {
				out = append(out, d.Path)
				break
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
