package docs_test

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository's top directory, seen from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// TestLinks checks every relative link of every markdown file in the
// repository: README.md, docs/ and the READMEs beside the code. A link
// must lead to a file or directory inside the repository, and its
// #fragment to a heading (or an <a id>) of the markdown file it names.
func TestLinks(t *testing.T) {
	root := repoRoot(t)
	files, err := markdownFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"README.md", "docs/protocol.md", "docs/architecture.md"} {
		if !contains(files, filepath.Join(root, want)) {
			t.Errorf("%s is missing", want)
		}
	}
	for _, p := range checkLinks(root, files) {
		t.Error(p)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// skipDirs are never searched for markdown: version control, what builds
// put down, and npm's packages.
var skipDirs = map[string]bool{"node_modules": true, "build": true, "dist": true, "bin": true}

// markdownFiles lists the *.md files under root, sorted.
func markdownFiles(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && (skipDirs[d.Name()] || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(d.Name(), ".md") {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// link is one link target found in a markdown file.
type link struct {
	line   int
	target string
}

// doc is what a markdown file offers (anchors) and asks for (links).
type doc struct {
	anchors map[string]bool
	links   []link
}

var (
	headingRE = regexp.MustCompile(`^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$`)
	fenceRE   = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})")
	// [text](target "title"), also ![alt](target).
	inlineRE = regexp.MustCompile(`\]\(\s*<?([^)\s>]*)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)`)
	// [label]: target
	refDefRE  = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	htmlRefRE = regexp.MustCompile(`(?:href|src)\s*=\s*"([^"]*)"`)
	htmlIDRE  = regexp.MustCompile(`<a\s[^>]*(?:id|name)\s*=\s*"([^"]+)"`)
	schemeRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	lineRefRE = regexp.MustCompile(`^L\d+(?:-L\d+)?$`)
	mdLinkRE  = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// parse reads a markdown text: its headings' anchors (as GitHub makes
// them) and its link targets, leaving out fenced code blocks and code
// spans, where brackets are text.
func parse(text string) doc {
	d := doc{anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := ""
	for i, line := range strings.Split(text, "\n") {
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			switch {
			case fence == "":
				fence = m[1]
				continue
			case m[1][0] == fence[0] && len(m[1]) >= len(fence) && strings.TrimSpace(line[len(m[0]):]) == "":
				fence = ""
				continue
			}
		}
		if fence != "" {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			s := slug(m[2])
			if n := seen[s]; n > 0 {
				d.anchors[fmt.Sprintf("%s-%d", s, n)] = true
			} else {
				d.anchors[s] = true
			}
			seen[s]++
		}
		for _, m := range htmlIDRE.FindAllStringSubmatch(line, -1) {
			d.anchors[m[1]] = true
		}
		plain := stripCodeSpans(line)
		for _, re := range []*regexp.Regexp{inlineRE, refDefRE, htmlRefRE} {
			for _, m := range re.FindAllStringSubmatch(plain, -1) {
				d.links = append(d.links, link{line: i + 1, target: m[1]})
			}
		}
	}
	return d
}

// stripCodeSpans blanks `code spans` (of any number of backticks) in a
// line; an unclosed run of backticks is left as it is.
func stripCodeSpans(line string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(line, '`')
		if i < 0 {
			b.WriteString(line)
			return b.String()
		}
		n := i
		for n < len(line) && line[n] == '`' {
			n++
		}
		run := line[i:n]
		end := -1
		for j := n; j < len(line); {
			k := strings.Index(line[j:], run)
			if k < 0 {
				break
			}
			k += j
			e := k + len(run)
			if e == len(line) || line[e] != '`' {
				end = e
				break
			}
			for e < len(line) && line[e] == '`' {
				e++
			}
			j = e
		}
		if end < 0 {
			b.WriteString(line)
			return b.String()
		}
		b.WriteString(line[:i])
		b.WriteString(" ")
		line = line[end:]
	}
}

// slug is GitHub's anchor for a heading's text: the text as rendered
// (code marks and link targets dropped), lower-cased, with every
// character but letters, digits, '-' and '_' removed and each space
// made a '-'.
func slug(heading string) string {
	h := mdLinkRE.ReplaceAllString(strings.TrimSpace(heading), "$1")
	h = strings.ToLower(h)
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// checkLinks returns one line per broken relative link in files.
func checkLinks(root string, files []string) []string {
	docs := map[string]doc{}
	load := func(p string) (doc, error) {
		if d, ok := docs[p]; ok {
			return d, nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return doc{}, err
		}
		d := parse(string(b))
		docs[p] = d
		return d, nil
	}
	var problems []string
	for _, f := range files {
		d, err := load(f)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		rel, _ := filepath.Rel(root, f)
		for _, l := range d.links {
			if msg := checkLink(root, f, l.target, load); msg != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: link %q: %s", rel, l.line, l.target, msg))
			}
		}
	}
	return problems
}

// checkLink checks one target of a link in file from; "" means it is
// fine (or not ours to check: absolute URLs).
func checkLink(root, from, target string, load func(string) (doc, error)) string {
	if target == "" {
		return "empty target"
	}
	if schemeRE.MatchString(target) || strings.HasPrefix(target, "//") {
		return ""
	}
	pathPart, frag, _ := strings.Cut(target, "#")
	pathPart, err := url.PathUnescape(pathPart)
	if err != nil {
		return err.Error()
	}
	dest := from
	if pathPart != "" {
		if strings.HasPrefix(pathPart, "/") {
			return "absolute path: write it relative to the file"
		}
		dest = filepath.Join(filepath.Dir(from), filepath.FromSlash(pathPart))
		if r, err := filepath.Rel(root, dest); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			return "leads out of the repository"
		}
		st, err := os.Stat(dest)
		if err != nil {
			return "no such file"
		}
		if st.IsDir() {
			if frag != "" {
				return "a #fragment on a directory"
			}
			return ""
		}
	}
	if frag == "" {
		return ""
	}
	if !strings.HasSuffix(dest, ".md") {
		if lineRefRE.MatchString(frag) {
			return ""
		}
		return "a #fragment on a file that is not markdown"
	}
	d, err := load(dest)
	if err != nil {
		return err.Error()
	}
	if !d.anchors[frag] {
		return fmt.Sprintf("no heading with anchor #%s", frag)
	}
	return ""
}
