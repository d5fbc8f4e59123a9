package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-agent/tether/internal/tools/buildcheck"
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
		{"within", func(p buildcheck.Platform) (int64, int64) { return p.FullBudget, p.SlimBudget }, false,
			[]string{"linux-arm64", "10.00", "6.50", "linux-armv7", "10.25", "6.75", "ok"}},
		{"full over on one", func(p buildcheck.Platform) (int64, int64) {
			if p.Dir == "linux-armv7" {
				return p.FullBudget + 1, 6 * m
			}
			return 8 * m, 6 * m
		}, true, []string{"OVER: full +0.00"}},
		{"slim over", func(p buildcheck.Platform) (int64, int64) { return 8 * m, p.SlimBudget + m/2 }, true, []string{"OVER: slim +0.50"}},
		{"no budget elsewhere", func(p buildcheck.Platform) (int64, int64) {
			if p.FullBudget == 0 {
				return 20 * m, 20 * m
			}
			return m, m
		}, false, []string{"20.00"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			over, err := run(&out, fakeDist(t, c.size), "", nil, 10, comparison{})
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
	if _, err := run(&bytes.Buffer{}, dist, "", nil, 10, comparison{}); err == nil || !strings.Contains(err.Error(), "make cross") {
		t.Errorf("a missing build gave %v, want an error pointing at make cross", err)
	}
}

func TestChanges(t *testing.T) {
	old := map[string]uint64{"std": 3072, "gone": 2048, "same": 1024, "small": 2048, "noise": 1024}
	now := map[string]uint64{"std": 5120, "new": 1024, "same": 1024, "small": 1024, "noise": 1024 + 511}
	var out bytes.Buffer
	if err := changes(&out, "module", old, now, 0); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		got = append(got, strings.Join(strings.Fields(l), " "))
	}
	want := []string{
		"module before now change",
		"std 3 5 +2", // growth first, largest first
		"new 0 1 +1",
		"gone 2 0 -2", // then shrinkage, largest first
		"small 2 1 -1",
		"(all modules) 9 9 +0", // unchanged keys and noise are left out, counted in the total
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("changes printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out.Reset()
	if err := changes(&out, "package", old, now, 1); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "std") || strings.Contains(s, "new") || !strings.Contains(s, "gone") || strings.Contains(s, "small") {
		t.Errorf("top 1 of each direction printed\n%s", s)
	}
}
