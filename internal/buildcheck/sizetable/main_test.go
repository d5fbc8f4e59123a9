package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-agent/tether/internal/buildcheck"
)

// fakeDist lays out files of the given sizes (sparse, so cheap) for every
// platform; size returns the full and slim size of one platform.
func fakeDist(t *testing.T, size func(buildcheck.Platform) (full, slim int64)) string {
	dist := t.TempDir()
	for _, p := range buildcheck.Platforms() {
		full, slim := size(p)
		for name, n := range map[string]int64{"tether": full, "tether-slim": slim} {
			path := filepath.Join(dist, p.Dir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(n); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dist
}

func TestSummaryBudget(t *testing.T) {
	const m = buildcheck.MiB
	for _, c := range []struct {
		name     string
		size     func(buildcheck.Platform) (int64, int64)
		wantOver bool
		want     []string
	}{
		{"within", func(buildcheck.Platform) (int64, int64) { return 9 * m, 6*m + m/2 }, false, []string{"linux-arm64", "9.00", "6.50", "ok"}},
		{"full over on one", func(p buildcheck.Platform) (int64, int64) {
			if p.Dir == "linux-armv7" {
				return 9*m + 1, 6 * m
			}
			return 8 * m, 6 * m
		}, true, []string{"OVER: full +0.00"}},
		{"slim over", func(buildcheck.Platform) (int64, int64) { return 8 * m, 7 * m }, true, []string{"OVER: slim +0.50"}},
		{"no budget elsewhere", func(p buildcheck.Platform) (int64, int64) {
			if p.FullBudget == 0 {
				return 20 * m, 20 * m
			}
			return m, m
		}, false, []string{"20.00"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			over, err := run(&out, fakeDist(t, c.size), "", nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			if over != c.wantOver {
				t.Errorf("over = %v, want %v\n%s", over, c.wantOver, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestSummaryMissingBuild(t *testing.T) {
	dist := fakeDist(t, func(buildcheck.Platform) (int64, int64) { return 1, 1 })
	if err := os.Remove(filepath.Join(dist, "linux-mipsle", "tether-slim")); err != nil {
		t.Fatal(err)
	}
	if _, err := run(&bytes.Buffer{}, dist, "", nil, 10); err == nil || !strings.Contains(err.Error(), "make cross") {
		t.Errorf("a missing build gave %v, want an error pointing at make cross", err)
	}
}
