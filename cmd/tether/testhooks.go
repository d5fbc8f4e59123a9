package main

import (
	"os"
	"path/filepath"

	"github.com/tether-agent/tether/internal/utmp"
)

// testLoginRecordsEnv points the login records at <dir>/utmp and
// <dir>/wtmp instead of the system's: the integration tests run the real
// binary on a developer's machine or a CI runner, whose own records they
// must not touch. Only the files that exist there are written, as on a
// system. Not a configuration key (docs/testing.md).
const testLoginRecordsEnv = "TETHERTEST_LOGIN_RECORDS_DIR"

func testLoginRecords() *utmp.Files {
	d := os.Getenv(testLoginRecordsEnv)
	if d == "" {
		return nil
	}
	var f utmp.Files
	if p := filepath.Join(d, "utmp"); exists(p) {
		f.Utmp = p
	}
	if p := filepath.Join(d, "wtmp"); exists(p) {
		f.Wtmp = p
	}
	return &f
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
