// Command sizetable prints what `make size` shows: the stripped size of the
// full and the slim tether per platform against the budget, and, for the
// platforms named as arguments, where the bytes go by section, module and
// package (from unstripped builds of the same sources).
//
//	sizetable -dist dist -unstripped build/size [-strict] linux-arm64 linux-armv7
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

	"github.com/tether-agent/tether/internal/buildcheck"
)

func main() {
	dist := flag.String("dist", "dist", "directory `make cross` built into")
	unstripped := flag.String("unstripped", "build/size", "directory of the unstripped builds of the detail platforms")
	top := flag.Int("top", 15, "packages to list per detail platform")
	strict := flag.Bool("strict", false, "exit 1 when a build is over its budget")
	flag.Parse()
	over, err := run(os.Stdout, *dist, *unstripped, flag.Args(), *top)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sizetable:", err)
		os.Exit(2)
	}
	if over && *strict {
		os.Exit(1)
	}
}

// run writes the report and says whether any build is over its budget.
func run(w io.Writer, dist, unstripped string, detail []string, top int) (bool, error) {
	over, err := summary(w, dist)
	if err != nil {
		return false, err
	}
	for _, dir := range detail {
		if err := breakdown(w, filepath.Join(unstripped, dir), dir, top); err != nil {
			return false, err
		}
	}
	return over, nil
}

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
