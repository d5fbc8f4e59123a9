// Package confval holds what the configuration (internal/config) and the
// protocols' own Config types (internal/proto/<name>) share: the Duration
// type of configuration files and the range checks whose messages name the
// key. It imports nothing of tether's, so that a protocol can define its
// configuration without importing internal/config.
package confval

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads both styles found in configuration:
// a Go duration string ("500ms", "2m") and a plain number of seconds (JSON
// number or bare env string, fractions allowed). It is written back as a
// duration string so `check-config` output is unambiguous.
type Duration time.Duration

// Duration returns d as a time.Duration.
func (d Duration) Duration() time.Duration { return time.Duration(d) }

// String renders d like time.Duration.String but without trailing zero units
// ("1m" instead of "1m0s"), which is friendlier in messages and output.
func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON accepts a number of seconds or a duration string; null leaves
// the value unchanged, as encoding/json does for other types.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		return nil
	}
	var v time.Duration
	var err error
	if strings.HasPrefix(s, `"`) {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		v, err = ParseDurationString(str)
	} else {
		v, err = ParseSeconds(s)
	}
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Decode reads a TETHER_* variable (internal/config's environment overlay): a Go duration string or a bare
// number of seconds.
func (d *Duration) Decode(value string) error {
	v, err := parseEnvDuration(value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func parseEnvDuration(value string) (time.Duration, error) {
	s := strings.TrimSpace(value)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return ParseSeconds(s)
	}
	return ParseDurationString(s)
}

// ParseDurationString reads a Go duration string.
func ParseDurationString(s string) (time.Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. \"500ms\", \"30s\", \"5m\" or a number of seconds)", s)
	}
	return v, nil
}

// ParseSeconds converts a decimal number of seconds, guarding against values
// that do not fit in a time.Duration.
func ParseSeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid number of seconds %q", s)
	}
	ns := f * float64(time.Second)
	if math.IsNaN(ns) || math.IsInf(ns, 0) || ns >= math.MaxInt64 || ns <= math.MinInt64 {
		return 0, fmt.Errorf("number of seconds %s is out of range", s)
	}
	return time.Duration(math.Round(ns)), nil
}

// FormatDuration is time.Duration.String without trailing zero units.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
