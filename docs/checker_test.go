package docs_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSlug(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Running the demo", "running-the-demo"},
		{"Operations: systemd, logs and metrics", "operations-systemd-logs-and-metrics"},
		{"Hardware-in-the-loop tests (QEMU)", "hardware-in-the-loop-tests-qemu"},
		{"5.4 Limits", "54-limits"},
		{"4. Terminal (proto 1)", "4-terminal-proto-1"},
		{"`make hil` and `TETHER_ARTIFACTS`", "make-hil-and-tether_artifacts"},
		{"See [the unit](../systemd/README.md)", "see-the-unit"},
		{"Control (0xFFFF) and router sessions", "control-0xffff-and-router-sessions"},
		{"Größe — ×2", "größe--2"},
	} {
		if got := slug(c.in); got != c.want {
			t.Errorf("slug(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParse(t *testing.T) {
	text := strings.Join([]string{
		"# Title",
		"See [a](a.md), ![pic](img/p.png \"title\") and [b](b.md#part).",
		"`[not](code.md)` and ``[nor](x.md) ` this``, but [yes](c.md).",
		"```sh",
		"[inside](fence.md)",
		"# not a heading",
		"```",
		"## Title",
		"## Title",
		`<a id="custom"></a> <img src="d.png">`,
		"[ref]: refs/e.md",
	}, "\n")
	d := parse(text)
	var targets []string
	for _, l := range d.links {
		targets = append(targets, l.target)
	}
	want := []string{"a.md", "img/p.png", "b.md#part", "c.md", "d.png", "refs/e.md"}
	if !reflect.DeepEqual(targets, want) {
		t.Errorf("links %q, want %q", targets, want)
	}
	for _, a := range []string{"title", "title-1", "title-2", "custom"} {
		if !d.anchors[a] {
			t.Errorf("anchor %q missing; have %v", a, d.anchors)
		}
	}
	if d.anchors["not-a-heading"] {
		t.Error("a heading inside a code fence counted")
	}
}

// TestCheckLinksFindsBreakage: the checker must fail on each kind of
// broken link and pass the good ones, or TestLinks proves nothing.
func TestCheckLinksFindsBreakage(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("docs/other.md", "# Other\n\n## Part two\n")
	write("docs/pic.png", "png")
	write("main.go", "package main\n")
	readme := write("README.md", strings.Join([]string{
		"# Top",
		"[ok](docs/other.md) [ok](docs/other.md#part-two) [ok](#top) [ok](docs/pic.png)",
		"[ok](docs/) [ok](main.go#L1) [ok](https://example.com/x.md#nothing)",
		"[missing file](docs/gone.md)",
		"[missing anchor](docs/other.md#part-three)",
		"[missing own anchor](#bottom)",
		"[outside](../elsewhere.md)",
		"[absolute](/docs/other.md)",
		"[fragment on go](main.go#func)",
	}, "\n"))
	problems := checkLinks(root, []string{readme})
	want := []string{
		`README.md:4: link "docs/gone.md": no such file`,
		`README.md:5: link "docs/other.md#part-three": no heading with anchor #part-three`,
		`README.md:6: link "#bottom": no heading with anchor #bottom`,
		`README.md:7: link "../elsewhere.md": leads out of the repository`,
		`README.md:8: link "/docs/other.md": absolute path: write it relative to the file`,
		`README.md:9: link "main.go#func": a #fragment on a file that is not markdown`,
	}
	if !reflect.DeepEqual(problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
}
