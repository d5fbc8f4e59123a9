package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/tether-agent/tether/internal/confval"
)

// LoadOptions says where Load looks. Empty fields mean the defaults.
type LoadOptions struct {
	Path         string // main file; "" = DefaultPath
	FallbackPath string // fallback file; "" = DefaultFallbackPath
	ShellsFile   string // "" = /etc/shells
}

func (o LoadOptions) paths() (mainPath, fallbackPath string) {
	mainPath, fallbackPath = o.Path, o.FallbackPath
	if mainPath == "" {
		mainPath = DefaultPath
	}
	if fallbackPath == "" {
		fallbackPath = DefaultFallbackPath
	}
	return mainPath, fallbackPath
}

// Load builds the effective configuration: defaults, then the fallback file,
// then the main file, then TETHER_* environment variables, then
// normalisation and Validate. Warnings (unknown or deprecated keys) do not
// stop loading. If only validation fails, the effective configuration is
// returned along with the error so callers can show it; on any other error
// cfg is nil.
func Load(opts LoadOptions) (cfg *Config, warnings []string, err error) {
	mainPath, fallbackPath := opts.paths()
	cfg = Default()
	set := make(map[string]bool) // lower-cased key paths the files give a value
	fallbackFound, err := loadFile(cfg, fallbackPath, &warnings, set)
	if err != nil {
		return nil, warnings, err
	}
	mainFound := false
	if filepath.Clean(mainPath) != filepath.Clean(fallbackPath) {
		mainFound, err = loadFile(cfg, mainPath, &warnings, set)
		if err != nil {
			return nil, warnings, err
		}
	}
	if !mainFound && !fallbackFound {
		if v, ok := os.LookupEnv(EnvPrefix + "_USER"); !ok || v == "" {
			return nil, warnings, fmt.Errorf("no configuration: neither %s nor %s exists and %s_USER is not set",
				mainPath, fallbackPath, EnvPrefix)
		}
	}

	warnings = append(warnings, unknownEnvWarnings()...)
	if err := loadEnv(EnvPrefix, cfg); err != nil {
		return nil, warnings, err
	}

	cfg.normalize()
	warnings = append(warnings, cfg.upstreamMeaning(set)...)
	warnings = append(warnings, cfg.capPingInterval()...)
	if err := cfg.Validate(opts.ShellsFile); err != nil {
		return cfg, warnings, err
	}
	return cfg, warnings, nil
}

// loadFile merges one JSON file into cfg. A missing file is not an error
// (found is false); anything else wrong with it is, naming the file.
func loadFile(cfg *Config, path string, warnings *[]string, set map[string]bool) (found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("reading configuration file: %w", err)
	}

	// A full parse first gives encoding/json's own syntax messages; the
	// token walk below then only has to deal with structure and types.
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineCol(data, int(se.Offset)-1)
			return true, fmt.Errorf("%s:%d:%d: invalid JSON: %w", path, line, col, err)
		}
		return true, fmt.Errorf("%s: invalid JSON: %w", path, err)
	}

	w := walker{data: data, file: path, dec: json.NewDecoder(bytes.NewReader(data)), set: set}
	w.dec.UseNumber()
	if err := w.top(); err != nil {
		return true, fmt.Errorf("%s: %w", path, err)
	}
	*warnings = append(*warnings, w.warnings...)
	if len(w.errs) > 0 {
		return true, errors.Join(w.errs...)
	}

	// The walk has checked every type, so this should not fail; if it does
	// the message still names the file.
	if err := json.Unmarshal(data, cfg); err != nil {
		return true, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// walker streams the tokens of a config file against the Config type to
// find unknown, deprecated and duplicate keys and values of the wrong type,
// reporting each with its dotted key path and file position.
type walker struct {
	data     []byte
	file     string
	dec      *json.Decoder
	warnings []string
	errs     []error
	// set collects the lower-cased paths of keys given a non-null value.
	set map[string]bool
}

func (w *walker) top() error {
	start := w.nextValueStart()
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		line, col := lineCol(w.data, start)
		return fmt.Errorf("%d:%d: the top level must be a JSON object, got %s", line, col, tokenKind(tok))
	}
	return w.object("", reflect.TypeOf(Config{}))
}

// object walks the members of an object whose '{' was just read.
func (w *walker) object(path string, t reflect.Type) error {
	seen := make(map[string]string)
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		full := joinPath(path, key)
		field, ok := fieldByFold(t, key)
		if !ok {
			if dep, isDep := deprecated(path, key); isDep {
				w.warnings = append(w.warnings, dep.warning(w.file))
			} else {
				w.warnings = append(w.warnings, fmt.Sprintf("unknown configuration key %q in %s", full, w.file))
			}
			if err := w.skipValue(); err != nil {
				return err
			}
			continue
		}
		if prev, dup := seen[field.Name]; dup {
			w.warnings = append(w.warnings, fmt.Sprintf("configuration key %q appears more than once in %s (as %q and %q); the last one wins",
				joinPath(path, field.Name), w.file, prev, key))
		}
		seen[field.Name] = key
		if err := w.value(full, field.Type); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // '}'
	return err
}

// value reads one value and checks it against t. Type mismatches are
// collected in w.errs; only a broken token stream is returned.
func (w *walker) value(path string, t reflect.Type) error {
	start := w.nextValueStart()
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // null leaves the current value (the default) alone
	}
	if w.set != nil {
		w.set[strings.ToLower(path)] = true
	}
	bad := func(want string) error {
		line, col := lineCol(w.data, start)
		w.errs = append(w.errs, fmt.Errorf("%s:%d:%d: configuration key %q: expected %s, got %s",
			w.file, line, col, path, want, tokenKind(tok)))
		return w.skipRest(tok)
	}
	badValue := func(msg string) error {
		line, col := lineCol(w.data, start)
		w.errs = append(w.errs, fmt.Errorf("%s:%d:%d: configuration key %q: %s", w.file, line, col, path, msg))
		return nil
	}

	if t == reflect.TypeFor[Duration]() {
		var perr error
		switch v := tok.(type) {
		case json.Number:
			_, perr = confval.ParseSeconds(v.String())
		case string:
			_, perr = confval.ParseDurationString(v)
		default:
			return bad("a duration (string such as \"30s\" or a number of seconds)")
		}
		if perr != nil {
			return badValue(perr.Error())
		}
		return nil
	}

	switch t.Kind() {
	case reflect.Struct:
		if d, ok := tok.(json.Delim); ok && d == '{' {
			return w.object(path, t)
		}
		return bad("an object")
	case reflect.Slice:
		if d, ok := tok.(json.Delim); ok && d == '[' {
			for i := 0; w.dec.More(); i++ {
				if err := w.value(fmt.Sprintf("%s[%d]", path, i), t.Elem()); err != nil {
					return err
				}
			}
			_, err := w.dec.Token() // ']'
			return err
		}
		return bad("an array")
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return bad("a string")
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			return bad("true or false")
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := tok.(json.Number)
		if !ok {
			return bad("a number")
		}
		if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			return badValue(fmt.Sprintf("%s is not an integer in 0..%d", n, ^uint64(0)>>(64-t.Bits())))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return bad("a number")
		}
		if _, err := strconv.ParseInt(n.String(), 10, t.Bits()); err != nil {
			return badValue(fmt.Sprintf("%s is not an integer that fits in %d bits", n, t.Bits()))
		}
	default:
		// Every Config field is one of the kinds above; a new kind needs a
		// case here, and this makes the omission loud in tests.
		return fmt.Errorf("configuration key %q: internal error: unhandled type %s", path, t)
	}
	return nil
}

// skipValue skips the next complete value.
func (w *walker) skipValue() error {
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	return w.skipRest(tok)
}

// skipRest skips the remainder of a value whose first token was tok.
func (w *walker) skipRest(tok json.Token) error {
	d, ok := tok.(json.Delim)
	if !ok || (d != '{' && d != '[') {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
	}
	return nil
}

// nextValueStart is the byte index where the next value begins: the
// decoder's offset may still be before the separating ':' or ','.
func (w *walker) nextValueStart() int {
	i := int(w.dec.InputOffset())
	for i < len(w.data) {
		switch w.data[i] {
		case ' ', '\t', '\r', '\n', ':', ',':
			i++
		default:
			return i
		}
	}
	return i
}

// fieldByFold finds the exported field named key, preferring an exact match
// and otherwise matching case-insensitively, as encoding/json does.
func fieldByFold(t reflect.Type, key string) (reflect.StructField, bool) {
	if f, ok := t.FieldByName(key); ok && f.IsExported() && !f.Anonymous {
		return f, true
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			// An embedded struct's fields are keys of its parent.
			if ef, ok := fieldByFold(f.Type, key); ok {
				return ef, true
			}
			continue
		}
		if f.IsExported() && strings.EqualFold(f.Name, key) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// deprecatedKey is an upstream top-level key that mender-connect 2.0 and
// later parse only to warn about, and how tether says so.
type deprecatedKey struct {
	name string
	// unused marks a key upstream reads without a warning but never uses.
	unused bool
	hint   string
}

// warning is upstream's message ("<field> field is deprecated, ignoring.")
// with where the key was and what tether offers instead.
func (k deprecatedKey) warning(file string) string {
	verb := "is deprecated"
	if k.unused {
		verb = "is unused since mender-connect 2.0"
	}
	return fmt.Sprintf("%s field %s, ignoring. (in %s; %s)", k.name, verb, file, k.hint)
}

// deprecatedKeys are upstream's deprecated top-level keys other than
// ServerURL, which tether reads with Auth.Source=static (see
// upstreamMeaning). None of them has any effect, whatever its value: a file
// written for mender-connect 1.x must not change how tether connects.
var deprecatedKeys = [...]deprecatedKey{
	{name: "ServerCertificate", hint: "tether's own key for an extra CA file is Link.CAFile"},
	{name: "SkipVerify", hint: "TLS certificates stay verified; tether's own key is Link.InsecureSkipVerify"},
	{name: "Servers", hint: "the server URL comes from the auth service"},
	{name: "ClientProtocol", hint: "the auth service's local proxy speaks to the server"},
	{name: "HttpsClient", hint: "client certificates are the auth service's business"},
	{name: "ReconnectIntervalSeconds", unused: true, hint: "tether's backoff is Reconnect.BackoffBase and Reconnect.BackoffMax"},
}

// deprecated reports whether key is one of deprecatedKeys.
func deprecated(path, key string) (deprecatedKey, bool) {
	if path != "" {
		return deprecatedKey{}, false
	}
	for _, d := range deprecatedKeys {
		if strings.EqualFold(d.name, key) {
			return d, true
		}
	}
	return deprecatedKey{}, false
}

// upstreamMeaning gives a file that mender-connect accepts the meaning it
// has there, with one warning for each difference: set holds the key paths
// the files gave (lower-cased). It runs after the environment overlay and
// normalisation, before validation.
func (c *Config) upstreamMeaning(set map[string]bool) []string {
	var out []string
	if c.ServerURL != "" && c.Auth.Source != AuthSourceStatic {
		out = append(out, fmt.Sprintf("ServerURL field is deprecated, ignoring. (the server URL comes from the auth service; tether reads ServerURL only with Auth.Source=%s)", AuthSourceStatic))
	}
	// Upstream has no MaxTotal: its device limit is a fixed 16 (the
	// default here), which caps any larger MaxPerUser. Only a file (or
	// environment) stating both keys contradicts itself.
	s := &c.Sessions
	_, envTotal := os.LookupEnv(EnvPrefix + "_SESSIONS_MAXTOTAL")
	if s.MaxPerUser > s.MaxTotal && !set["sessions.maxtotal"] && !envTotal {
		out = append(out, fmt.Sprintf("Sessions.MaxPerUser %d is larger than the device limit Sessions.MaxTotal (%d, not set); a user can open at most %d sessions, as with mender-connect",
			s.MaxPerUser, s.MaxTotal, s.MaxTotal))
		s.MaxPerUser = s.MaxTotal
	}
	return out
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func tokenKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// lineCol turns a byte index into a 1-based line and column (in bytes).
func lineCol(data []byte, idx int) (line, col int) {
	if idx < 0 {
		idx = 0
	}
	if idx > len(data) {
		idx = len(data)
	}
	before := data[:idx]
	line = 1 + bytes.Count(before, []byte{'\n'})
	col = idx - bytes.LastIndexByte(before, '\n')
	return line, col
}

// envKeys lists every variable loadEnv reads for a Config.
func envKeys() map[string]bool {
	keys := make(map[string]bool)
	for _, ef := range envFields(EnvPrefix, reflect.ValueOf(&Config{}).Elem(), nil) {
		keys[ef.key] = true
	}
	return keys
}

// unknownEnvWarnings reports TETHER_* variables that match no key, so a typo
// in a unit file's Environment= does not pass silently.
func unknownEnvWarnings() []string {
	known := envKeys()
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") && !known[name] {
			out = append(out, fmt.Sprintf("unknown environment variable %q (no such configuration key)", name))
		}
	}
	sort.Strings(out)
	return out
}
