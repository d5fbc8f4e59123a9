package mockserver

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestConsoleBundleMatchesSources rebuilds the web console's bundle from
// its sources and pinned packages, as `make web` does, in a scratch copy
// of the directory, and fails when the committed bundle differs: the
// bundle that is embedded must be the one its sources make.
func TestConsoleBundleMatchesSources(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm not found (scripts/setup.sh installs it): %v", err)
	}
	dir := t.TempDir()
	for _, name := range []string{"package.json", "package-lock.json"} {
		copyFile(t, filepath.Join("web", name), filepath.Join(dir, name))
	}
	err = filepath.WalkDir(filepath.Join("web", "src"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel("web", path)
		if err != nil {
			return err
		}
		copyFile(t, path, filepath.Join(dir, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"},
		{"run", "--silent", "build"},
	} {
		cmd := exec.Command(npm, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm %v: %v\n%s", args, err, out)
		}
	}
	for _, name := range []string{"console.js", "console.css"} {
		want, err := os.ReadFile(filepath.Join("web", "dist", name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "dist", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("web/dist/%s (%d bytes) is not what its sources build (%d bytes): run `make web` and commit the result", name, len(want), len(got))
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
