// Command sizetable prints what `make size` shows: the stripped size of the
// full and the slim tether per platform against the budget, and, for the
// platforms named as arguments, where the bytes go by section, module and
// package (from unstripped builds of the same sources).
//
//	sizetable -dist dist -unstripped build/size [-base build/size/base] [-strict] linux-arm64 linux-armv7
//
// With -base, a directory laid out like -unstripped holding builds of
// older sources, it also lists what grew since, by module and package.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/tether-agent/tether/internal/tools/buildcheck"
)

func main() {
	dist := flag.String("dist", "dist", "directory `make cross` built into")
	unstripped := flag.String("unstripped", "build/size", "directory of the unstripped builds of the detail platforms")
	top := flag.Int("top", 15, "packages to list per detail platform; 0 lists all")
	strict := flag.Bool("strict", false, "exit 1 when a build is over its budget")
	base := flag.String("base", "", "directory of unstripped builds of older sources to compare with")
	baseName := flag.String("base-name", "base", "what to call the -base builds (a git revision)")
	flag.Parse()
	over, err := run(os.Stdout, *dist, *unstripped, flag.Args(), *top, comparison{dir: *base, name: *baseName})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sizetable:", err)
		os.Exit(2)
	}
	if over && *strict {
		os.Exit(1)
	}
}

// comparison names unstripped builds of older sources; dir "" means none.
type comparison struct{ dir, name string }

// run writes the report and says whether any build is over its budget.
func run(w io.Writer, dist, unstripped string, detail []string, top int, base comparison) (bool, error) {
	over, err := summary(w, dist)
	if err != nil {
		return false, err
	}
	for _, dir := range detail {
		if err := breakdown(w, filepath.Join(unstripped, dir), dir, top); err != nil {
			return false, err
		}
		if base.dir != "" {
			if err := growth(w, filepath.Join(base.dir, dir), filepath.Join(unstripped, dir), dir, base.name, top); err != nil {
				return false, err
			}
		}
	}
	return over, nil
}

// growth lists, for the full and the slim build, the modules and packages
// whose symbols changed most in size between the builds in baseDir and
// those in dir.
func growth(w io.Writer, baseDir, dir, name, baseName string, top int) error {
	for _, bin := range []string{"tether", "tether-slim"} {
		old, err := buildcheck.MeasureSizes(filepath.Join(baseDir, bin))
		if err != nil {
			return err
		}
		now, err := buildcheck.MeasureSizes(filepath.Join(dir, bin))
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "\n%s %s: what changed since %s (KiB of symbols, largest growth first)\n\n", name, bin, baseName)
		if err := changes(w, "module", old.Modules, now.Modules, 0); err != nil {
			return err
		}
		fmt.Fprintln(w)
		if err := changes(w, "package", old.Packages, now.Packages, top); err != nil {
			return err
		}
	}
	return nil
}

// changes lists the keys whose value differs by half a KiB or more between
// old and now, largest growth first, then largest shrinkage; n > 0 keeps the first n rows of
// each; the last row is the total over all keys.
func changes(w io.Writer, what string, old, now map[string]uint64, n int) error {
	type row struct {
		key  string
		diff int64
	}
	var grew, shrank []row
	var to, tn uint64
	// Changes under half a KiB would print as +0 or -0: alignment noise.
	const noise = 512
	for k, v := range now {
		tn += v
		if d := int64(v) - int64(old[k]); d >= noise {
			grew = append(grew, row{k, d})
		} else if d <= -noise {
			shrank = append(shrank, row{k, d})
		}
	}
	for k, v := range old {
		to += v
		if _, ok := now[k]; !ok && v >= noise {
			shrank = append(shrank, row{k, -int64(v)})
		}
	}
	sort.Slice(grew, func(i, j int) bool {
		return grew[i].diff > grew[j].diff || grew[i].diff == grew[j].diff && grew[i].key < grew[j].key
	})
	sort.Slice(shrank, func(i, j int) bool {
		return shrank[i].diff < shrank[j].diff || shrank[i].diff == shrank[j].diff && shrank[i].key < shrank[j].key
	})
	if n > 0 {
		grew, shrank = grew[:min(n, len(grew))], shrank[:min(n, len(shrank))]
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\tbefore\tnow\tchange\t\n", what)
	for _, r := range append(grew, shrank...) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", r.key, kib(old[r.key]), kib(now[r.key]), signedKiB(r.diff))
	}
	fmt.Fprintf(tw, "(all %ss)\t%s\t%s\t%s\t\n", what, kib(to), kib(tn), signedKiB(int64(tn)-int64(to)))
	return tw.Flush()
}

func signedKiB(n int64) string { return fmt.Sprintf("%+.0f", float64(n)/1024) }

func summary(w io.Writer, dist string) (bool, error) {
	var budgets []string
	for _, p := range buildcheck.Platforms() {
		if p.FullBudget > 0 {
			budgets = append(budgets, fmt.Sprintf("%s full <= %s, slim <= %s", p.Dir, mib(p.FullBudget), mib(p.SlimBudget)))
		}
	}
	fmt.Fprintf(w, "Stripped sizes in bytes and MiB (1 MiB = %d bytes). Budgets: %s.\n\n", buildcheck.MiB, strings.Join(budgets, "; "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "platform\ttether\tMiB\ttether-slim\tMiB\tslim saves\tbudget\t")
	anyOver := false
	for _, p := range buildcheck.Platforms() {
		full, err := fileSize(filepath.Join(dist, p.Dir, "tether"))
		if err != nil {
			return false, err
		}
		slim, err := fileSize(filepath.Join(dist, p.Dir, "tether-slim"))
		if err != nil {
			return false, err
		}
		verdict := "-"
		if p.FullBudget > 0 {
			var misses []string
			if full > p.FullBudget {
				misses = append(misses, fmt.Sprintf("full +%s", mib(full-p.FullBudget)))
			}
			if slim > p.SlimBudget {
				misses = append(misses, fmt.Sprintf("slim +%s", mib(slim-p.SlimBudget)))
			}
			verdict = "ok"
			if len(misses) > 0 {
				verdict = "OVER: " + strings.Join(misses, ", ")
				anyOver = true
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\t\n", p.Dir, full, mib(full), slim, mib(slim), mib(full-slim), verdict)
	}
	return anyOver, tw.Flush()
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("%w (run make cross first)", err)
	}
	return fi.Size(), nil
}

func mib(n int64) string { return fmt.Sprintf("%.2f", float64(n)/buildcheck.MiB) }

func kib(n uint64) string { return fmt.Sprintf("%.0f", float64(n)/1024) }

// breakdown explains one platform's sizes from its unstripped builds.
func breakdown(w io.Writer, dir, name string, top int) error {
	full, err := buildcheck.MeasureSizes(filepath.Join(dir, "tether"))
	if err != nil {
		return err
	}
	slim, err := buildcheck.MeasureSizes(filepath.Join(dir, "tether-slim"))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%s: where the bytes go (KiB; code and data by symbol, from unstripped builds)\n\n", name)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "section\ttether\ttether-slim\t")
	for _, s := range keysBySize(full.Sections, slim.Sections) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", s, kib(full.Sections[s]), kib(slim.Sections[s]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "  (.gopclntab, the tables behind stack traces and the GC, grows with .text; .rodata is mostly type data and strings, which the symbol table does not attribute.)")

	fmt.Fprintln(w)
	if err := table(w, "module", full.Modules, slim.Modules, 0); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return table(w, "package", full.Packages, slim.Packages, top)
}

// table lists the keys of full and slim, largest first in the full build,
// with the difference; n > 0 keeps only the first n rows.
func table(w io.Writer, what string, full, slim map[string]uint64, n int) error {
	keys := keysBySize(full, slim)
	if n > 0 && len(keys) > n {
		keys = keys[:n]
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\ttether\ttether-slim\tdifference\t\n", what)
	var tf, ts uint64
	for _, v := range full {
		tf += v
	}
	for _, v := range slim {
		ts += v
	}
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", k, kib(full[k]), kib(slim[k]), kib(full[k]-min(full[k], slim[k])))
	}
	fmt.Fprintf(tw, "(all %ss)\t%s\t%s\t%s\t\n", what, kib(tf), kib(ts), kib(tf-min(tf, ts)))
	return tw.Flush()
}

// keysBySize returns the union of the keys, largest in a first.
func keysBySize(a, b map[string]uint64) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range []map[string]uint64{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if a[keys[i]] != a[keys[j]] {
			return a[keys[i]] > a[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}
