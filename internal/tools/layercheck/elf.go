package layercheck

import (
	"debug/elf"
	"fmt"
)

// CheckStaticExec fails unless file is an ELF executable for machine that a
// kernel can start without any loader: type ET_EXEC (not ET_DYN, which is
// what a PIE is), no PT_INTERP, no PT_DYNAMIC and no DT_NEEDED libraries.
func CheckStaticExec(file string, machine elf.Machine) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("open ELF %s: %w", file, err)
	}
	defer f.Close()
	if f.Machine != machine {
		return fmt.Errorf("%s: machine %v, want %v", file, f.Machine, machine)
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("%s: ELF type %v, want ET_EXEC (a position-dependent executable; ET_DYN means PIE)", file, f.Type)
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			return fmt.Errorf("%s: has an ELF interpreter (PT_INTERP): dynamically linked", file)
		case elf.PT_DYNAMIC:
			return fmt.Errorf("%s: has a PT_DYNAMIC segment: dynamically linked", file)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: imported libraries: %w", file, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("%s: needs shared libraries %v", file, libs)
	}
	return nil
}
