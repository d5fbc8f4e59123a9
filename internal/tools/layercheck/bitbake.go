// Package layercheck validates the Yocto layer (yocto/meta-tether) and the
// Buildroot external tree (buildroot/) offline: metadata syntax and fields,
// the pinned Go module list and licences, and that the build flags the
// recipes produce give a static, non-PIE executable. The checks themselves
// are the tests of this package, built with -tags layercheck (make
// layers-check); this file and its siblings are the tools they use.
package layercheck

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

// BBStatement is one parsed statement of a BitBake file.
type BBStatement struct {
	Line int
	// Kind is "assign", "inherit", "require", "include", "addtask",
	// "function", "export" (a bare export) or "flag" (VAR[flag] = ...).
	Kind string
	// Var is the variable name without overrides (assign, flag, export).
	Var string
	// Overrides are the ":x" parts after Var, in order (assign, flag).
	Overrides []string
	// Flag is the varflag name (flag).
	Flag string
	// Op is the assignment operator (assign, flag).
	Op string
	// Value is the assigned value with line continuations joined, or the
	// argument list of inherit/require/include/addtask, or the function name.
	Value string
	// Export is set for "export VAR = ...".
	Export bool
	// Python is set for python functions and anonymous python.
	Python bool
}

// BBFile is a parsed BitBake file: recipe, include, class or layer.conf.
type BBFile struct {
	Path       string
	Statements []BBStatement
}

var (
	bbAssignRe = regexp.MustCompile(`^(export\s+)?([A-Za-z0-9_${}/.+-]+)((?::[A-Za-z0-9_${}.+-]+)*)(\[[A-Za-z0-9_.-]+\])?\s*(\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)\s*(.*)$`)
	bbFuncRe   = regexp.MustCompile(`^(python\s+)?([A-Za-z0-9_${}:.-]*)\s*\(\s*\)\s*\{\s*$`)
	bbAnonPyRe = regexp.MustCompile(`^python\s*\{\s*$`)
	bbDefRe    = regexp.MustCompile(`^def\s+[A-Za-z0-9_]+\(.*\):\s*$`)
	bbKeyword  = regexp.MustCompile(`^(inherit|inherit_defer|require|include|addtask|deltask|addhandler|EXPORT_FUNCTIONS)\s+(.+)$`)
	bbExportRe = regexp.MustCompile(`^export\s+([A-Za-z0-9_]+)\s*$`)
)

// ParseBBFile parses the subset of BitBake syntax that layer metadata uses
// and rejects every line it does not understand, so that a typo (an
// unbalanced quote, a stray character) is an error here rather than a
// surprise at bitbake's parse.
func ParseBBFile(path string) (*BBFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return ParseBBText(path, string(data))
}

// ParseBBText is ParseBBFile on text already read; path names it in errors.
func ParseBBText(path, data string) (*BBFile, error) {
	f := &BBFile{Path: path}
	lines := strings.Split(data, "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		// Function bodies: shell and python functions end at a "}" in column 0.
		if m := bbFuncRe.FindStringSubmatch(trimmed); m != nil && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			end, err := findClose(lines, i, path)
			if err != nil {
				return nil, err
			}
			f.Statements = append(f.Statements, BBStatement{Line: lineNo, Kind: "function", Value: m[2], Python: m[1] != ""})
			i = end
			continue
		}
		if bbAnonPyRe.MatchString(trimmed) {
			end, err := findClose(lines, i, path)
			if err != nil {
				return nil, err
			}
			f.Statements = append(f.Statements, BBStatement{Line: lineNo, Kind: "function", Value: "__anonymous", Python: true})
			i = end
			continue
		}
		// Python "def" blocks end at the first non-indented, non-empty line.
		if bbDefRe.MatchString(trimmed) && line == trimmed {
			j := i + 1
			for j < len(lines) && (strings.TrimSpace(lines[j]) == "" || strings.HasPrefix(lines[j], " ") || strings.HasPrefix(lines[j], "\t")) {
				j++
			}
			f.Statements = append(f.Statements, BBStatement{Line: lineNo, Kind: "function", Value: "def", Python: true})
			i = j - 1
			continue
		}
		// Join continuation lines.
		full := trimmed
		for strings.HasSuffix(full, `\`) {
			i++
			if i >= len(lines) {
				return nil, fmt.Errorf("%s:%d: continuation at end of file", path, lineNo)
			}
			full = strings.TrimSuffix(full, `\`) + " " + strings.TrimSpace(lines[i])
		}
		if m := bbKeyword.FindStringSubmatch(full); m != nil {
			kind := m[1]
			if kind == "inherit_defer" {
				kind = "inherit"
			}
			f.Statements = append(f.Statements, BBStatement{Line: lineNo, Kind: kind, Value: strings.TrimSpace(m[2])})
			continue
		}
		if m := bbExportRe.FindStringSubmatch(full); m != nil {
			f.Statements = append(f.Statements, BBStatement{Line: lineNo, Kind: "export", Var: m[1], Export: true})
			continue
		}
		m := bbAssignRe.FindStringSubmatch(full)
		if m == nil {
			return nil, fmt.Errorf("%s:%d: not BitBake syntax this checker knows: %q", path, lineNo, full)
		}
		value, err := unquoteBB(m[6])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, lineNo, err)
		}
		st := BBStatement{Line: lineNo, Kind: "assign", Var: m[2], Op: m[5], Value: value, Export: m[1] != ""}
		if m[3] != "" {
			st.Overrides = strings.Split(strings.TrimPrefix(m[3], ":"), ":")
		}
		if m[4] != "" {
			st.Kind = "flag"
			st.Flag = strings.Trim(m[4], "[]")
		}
		f.Statements = append(f.Statements, st)
	}
	return f, nil
}

func findClose(lines []string, start int, path string) (int, error) {
	for j := start + 1; j < len(lines); j++ {
		if strings.HasPrefix(lines[j], "}") {
			return j, nil
		}
	}
	return 0, fmt.Errorf("%s:%d: function never closed with a \"}\" in column 0", path, start+1)
}

// unquoteBB takes a value in double or single quotes, as BitBake requires.
func unquoteBB(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || (s[0] != '"' && s[0] != '\'') || s[len(s)-1] != s[0] {
		return "", fmt.Errorf("value must be quoted: %s", s)
	}
	inner := s[1 : len(s)-1]
	if s[0] == '"' && strings.Contains(strings.ReplaceAll(inner, `\"`, ""), `"`) {
		return "", fmt.Errorf("unescaped double quote inside %s", s)
	}
	return strings.ReplaceAll(inner, `\"`, `"`), nil
}

// Assignments returns the assign statements for name (any overrides).
func (f *BBFile) Assignments(name string) []BBStatement {
	var out []BBStatement
	for _, st := range f.Statements {
		if st.Kind == "assign" && st.Var == name {
			out = append(out, st)
		}
	}
	return out
}

// Inherits lists the classes inherited with a literal name.
func (f *BBFile) Inherits() []string {
	var out []string
	for _, st := range f.Statements {
		if st.Kind == "inherit" {
			for _, c := range strings.Fields(st.Value) {
				if !strings.Contains(c, "$") {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// BBData evaluates variables the way BitBake does for the operators and
// overrides layer metadata uses here: =, ?=, ??=, :=, +=, =+, .=, =.,
// conditional overrides in priority order, then :append, :prepend and
// :remove. Inline python (${@...}) is evaluated by the functions in Python,
// keyed by the exact expression; any other expression is an error, so a new
// one in a recipe must be taught to the checker explicitly.
type BBData struct {
	// Overrides are the active overrides, lowest priority first (as in
	// OVERRIDES, where later entries win).
	Overrides []string
	// Python evaluates known inline python expressions.
	Python map[string]func(d *BBData) (string, error)

	vars map[string]*bbVar
}

type bbVar struct {
	value    string
	set      bool
	weak     string // ??=
	hasWeak  bool
	override map[string]string // conditional override values (VAR:o = ...)
	appends  []bbMod
	prepends []bbMod
	removes  []bbMod
}

type bbMod struct {
	value string
	conds []string // must all be active
}

// NewBBData returns an empty datastore with the given active overrides.
func NewBBData(overrides ...string) *BBData {
	return &BBData{Overrides: overrides, Python: map[string]func(*BBData) (string, error){}, vars: map[string]*bbVar{}}
}

func (d *BBData) v(name string) *bbVar {
	if d.vars[name] == nil {
		d.vars[name] = &bbVar{override: map[string]string{}}
	}
	return d.vars[name]
}

func (d *BBData) active(o string) bool {
	for _, a := range d.Overrides {
		if a == o {
			return true
		}
	}
	return false
}

// Apply runs the assignments of f in order.
func (d *BBData) Apply(f *BBFile) error {
	for _, st := range f.Statements {
		if st.Kind != "assign" {
			continue
		}
		if err := d.Set(st.Var, st.Overrides, st.Op, st.Value); err != nil {
			return fmt.Errorf("%s:%d: %w", f.Path, st.Line, err)
		}
	}
	return nil
}

// Set performs one assignment.
func (d *BBData) Set(name string, overrides []string, op, value string) error {
	v := d.v(name)
	var kind string
	var conds []string
	for _, o := range overrides {
		switch o {
		case "append", "prepend", "remove":
			if kind != "" {
				return fmt.Errorf("%s: two of append/prepend/remove", name)
			}
			kind = o
		default:
			conds = append(conds, o)
		}
	}
	if kind != "" {
		if op != "=" {
			return fmt.Errorf("%s:%s must use =, not %s", name, kind, op)
		}
		m := bbMod{value: value, conds: conds}
		switch kind {
		case "append":
			v.appends = append(v.appends, m)
		case "prepend":
			v.prepends = append(v.prepends, m)
		case "remove":
			v.removes = append(v.removes, m)
		}
		return nil
	}
	if len(conds) > 1 {
		return fmt.Errorf("%s: more than one condition override is not supported", name)
	}
	if len(conds) == 1 {
		// VAR:o is a variable of its own that replaces VAR when o is active.
		cur, have := v.override[conds[0]]
		switch op {
		case "=", ":=":
			if op == ":=" {
				x, err := d.Expand(value)
				if err != nil {
					return err
				}
				value = x
			}
			v.override[conds[0]] = value
		case "?=", "??=":
			if !have {
				v.override[conds[0]] = value
			}
		case "+=":
			v.override[conds[0]] = joinNonEmpty(cur, value, " ")
		case "=+":
			v.override[conds[0]] = joinNonEmpty(value, cur, " ")
		case ".=":
			v.override[conds[0]] = cur + value
		case "=.":
			v.override[conds[0]] = value + cur
		}
		return nil
	}
	switch op {
	case "=":
		v.value, v.set = value, true
	case "?=":
		if !v.set {
			v.value, v.set = value, true
		}
	case "??=":
		v.weak, v.hasWeak = value, true
	case ":=":
		x, err := d.Expand(value)
		if err != nil {
			return err
		}
		v.value, v.set = x, true
	case "+=":
		v.value, v.set = joinNonEmpty(d.base(v), value, " "), true
	case "=+":
		v.value, v.set = joinNonEmpty(value, d.base(v), " "), true
	case ".=":
		v.value, v.set = d.base(v)+value, true
	case "=.":
		v.value, v.set = value+d.base(v), true
	default:
		return fmt.Errorf("%s: operator %s", name, op)
	}
	return nil
}

func (d *BBData) base(v *bbVar) string {
	if v.set {
		return v.value
	}
	if v.hasWeak {
		return v.weak
	}
	return ""
}

func joinNonEmpty(a, b, sep string) string {
	if a == "" {
		return b
	}
	return a + sep + b
}

// Has reports whether name has any value.
func (d *BBData) Has(name string) bool {
	v := d.vars[name]
	return v != nil && (v.set || v.hasWeak || len(v.override) > 0 || len(v.appends) > 0 || len(v.prepends) > 0)
}

// Raw returns the unexpanded value after overrides, appends, prepends and
// removes.
func (d *BBData) Raw(name string) string {
	v := d.vars[name]
	if v == nil {
		return ""
	}
	val := d.base(v)
	for _, o := range d.Overrides { // later overrides win
		if x, ok := v.override[o]; ok {
			val = x
		}
	}
	ok := func(m bbMod) bool {
		for _, c := range m.conds {
			if !d.active(c) {
				return false
			}
		}
		return true
	}
	for _, m := range v.prepends {
		if ok(m) {
			val = m.value + val
		}
	}
	for _, m := range v.appends {
		if ok(m) {
			val += m.value
		}
	}
	return val
}

var bbVarRef = regexp.MustCompile(`\$\{([A-Za-z0-9_:+.-]+)\}`)

// Get returns the expanded value of name.
func (d *BBData) Get(name string) (string, error) {
	val, err := d.Expand(d.Raw(name))
	if err != nil {
		return "", fmt.Errorf("expand %s: %w", name, err)
	}
	v := d.vars[name]
	if v == nil || len(v.removes) == 0 {
		return val, nil
	}
	drop := map[string]bool{}
	for _, m := range v.removes {
		skip := false
		for _, c := range m.conds {
			if !d.active(c) {
				skip = true
			}
		}
		if skip {
			continue
		}
		x, err := d.Expand(m.value)
		if err != nil {
			return "", err
		}
		for _, w := range strings.Fields(x) {
			drop[w] = true
		}
	}
	// :remove works on whitespace-separated words and keeps the others.
	var kept []string
	for _, w := range strings.Fields(val) {
		if !drop[w] {
			kept = append(kept, w)
		}
	}
	return strings.Join(kept, " "), nil
}

// Expand substitutes ${VAR} and known ${@...} expressions, leaving unknown
// variable references as they are (BitBake does the same).
func (d *BBData) Expand(s string) (string, error) {
	for depth := 0; depth < 32; depth++ {
		changed := false
		var firstErr error
		// Inline python first, innermost expressions only (no nested "${").
		for {
			i := strings.Index(s, "${@")
			if i < 0 {
				break
			}
			j := matchBrace(s, i+1)
			if j < 0 {
				return "", fmt.Errorf("unbalanced ${@ in %q", s)
			}
			expr := s[i+3 : j]
			fn := d.Python[expr]
			if fn == nil {
				return "", fmt.Errorf("inline python the checker does not know: ${@%s}", expr)
			}
			out, err := fn(d)
			if err != nil {
				return "", err
			}
			s = s[:i] + out + s[j+1:]
			changed = true
		}
		s = bbVarRef.ReplaceAllStringFunc(s, func(ref string) string {
			name := ref[2 : len(ref)-1]
			if !d.Has(name) {
				return ref
			}
			val, err := d.Get(name)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			changed = true
			return val
		})
		if firstErr != nil {
			return "", firstErr
		}
		if !changed {
			return s, nil
		}
	}
	return "", fmt.Errorf("recursive expansion in %q", s)
}

func matchBrace(s string, open int) int {
	depth := 0
	for k := open; k < len(s); k++ {
		switch s[k] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return k
			}
		}
	}
	return -1
}

// PackageConfigArgs computes PACKAGECONFIG_CONFARGS as base.bbclass does:
// for each PACKAGECONFIG[x] flag, the first field when x is enabled, the
// second otherwise, joined with spaces.
func PackageConfigArgs(flags map[string]string, enabled []string) string {
	on := map[string]bool{}
	for _, e := range enabled {
		on[e] = true
	}
	names := make([]string, 0, len(flags))
	for n := range flags {
		names = append(names, n)
	}
	sort.Strings(names)
	var args []string
	for _, n := range names {
		fields := strings.Split(flags[n], ",")
		idx := 1
		if on[n] {
			idx = 0
		}
		if idx < len(fields) && strings.TrimSpace(fields[idx]) != "" {
			args = append(args, strings.TrimSpace(fields[idx]))
		}
	}
	return strings.Join(args, " ")
}

// Flags returns the varflags set on name in f (VAR[flag] = "value").
func (f *BBFile) Flags(name string) map[string]string {
	out := map[string]string{}
	for _, st := range f.Statements {
		if st.Kind == "flag" && st.Var == name && len(st.Overrides) == 0 {
			out[st.Flag] = st.Value
		}
	}
	return out
}

// ShellWords splits s the way a POSIX shell splits an unquoted expansion
// followed by quote removal, which is what happens to GOBUILDFLAGS in
// go.bbclass's "${GO} install ${GOBUILDFLAGS} ..." (the variable is
// substituted into the script text before the shell runs it).
func ShellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	sc := bufio.NewReader(strings.NewReader(s))
	var quote rune
	for {
		r, _, err := sc.ReadRune()
		if err != nil {
			break
		}
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
				continue
			}
			if quote == '"' && r == '\\' {
				n, _, err := sc.ReadRune()
				if err != nil {
					return nil, fmt.Errorf("trailing backslash in %q", s)
				}
				if n != '"' && n != '\\' && n != '$' && n != '`' {
					cur.WriteRune('\\')
				}
				cur.WriteRune(n)
				continue
			}
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote = r
			inWord = true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '\\':
			n, _, err := sc.ReadRune()
			if err != nil {
				return nil, fmt.Errorf("trailing backslash in %q", s)
			}
			cur.WriteRune(n)
			inWord = true
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
