package filetransfer

import (
	"regexp"
	"testing"
)

// tempNameRegexp is the naming isTempName checks, as the regular
// expression it replaced: the tests hold the two to the same answers.
var tempNameRegexp = regexp.MustCompile(`(?s)^\..+\.tether-[0-9a-f]{12}$`)

// TestIsTempName: only names of tempName's making pass, byte for byte as
// the regular expression decided, for names that are not UTF-8 too.
func TestIsTempName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{".a.tether-0123456789ab", true},
		{".report.pdf.tether-cdef01234567", true},
		{".\n.tether-0123456789ab", true},
		{".\xff.tether-0123456789ab", true},
		{"..tether-0123456789ab", false}, // nothing between the dots
		{"..tether-0123456789ab.tether-0123456789ab", true},
		{"a.tether-0123456789ab", false},    // no leading dot
		{".a.tether-0123456789AB", false},   // upper-case hex
		{".a.tether-0123456789a", false},    // 11 digits
		{".a.tether-0123456789abc", false},  // 13 digits
		{".a.tether-0123456789ag", false},   // not hex
		{".a-tether-0123456789ab", false},   // no dot before tether
		{".a.tether-0123456789ab\n", false}, // trailing newline
		{".a.tethe-0123456789abc", false},
		{"", false},
		{".", false},
		{".tether-0123456789ab", false},
	} {
		if got := isTempName([]byte(tc.name)); got != tc.want {
			t.Errorf("isTempName(%q) = %v, want %v", tc.name, got, tc.want)
		}
		if re := tempNameRegexp.MatchString(tc.name); re != tc.want {
			t.Errorf("the table is wrong for %q: the regular expression says %v", tc.name, re)
		}
	}
}

// FuzzIsTempName: isTempName and the regular expression agree on any bytes.
func FuzzIsTempName(f *testing.F) {
	f.Add([]byte(".a.tether-0123456789ab"))
	f.Add([]byte("..tether-0123456789ab"))
	f.Add([]byte(".\xff\xfe.tether-fedcba987654"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := isTempName(b), tempNameRegexp.Match(b); got != want {
			t.Fatalf("isTempName(%q) = %v, the regular expression says %v", b, got, want)
		}
	})
}
