package confval

import (
	"errors"
	"fmt"
	"time"
)

// AddFunc records one problem with the key it is about.
type AddFunc func(key, format string, args ...any)

// Problem is one validation message about a key. A protocol's Config
// names its keys relative to its section ("Window"); internal/config
// prefixes the section ("PortForward.Window").
type Problem struct {
	Key, Msg string
}

func (p *Problem) Error() string { return p.Key + ": " + p.Msg }

// Problems collects Problem values; Err joins them.
type Problems []error

// Add records a problem about key.
func (ps *Problems) Add(key, format string, args ...any) {
	*ps = append(*ps, &Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Err is every problem joined with errors.Join, nil when there is none.
func (ps Problems) Err() error { return errors.Join(ps...) }

// Each calls f with every problem of err (as joined by Problems.Err):
// key and message, or "" and the error itself for one that is no Problem.
func Each(err error, f func(key, msg string)) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			Each(e, f)
		}
		return
	}
	var p *Problem
	if errors.As(err, &p) {
		f(p.Key, p.Msg)
		return
	}
	f("", err.Error())
}

// CheckUint enforces lo ≤ v ≤ hi and reports whether it holds.
func CheckUint(add AddFunc, key string, v, lo, hi uint32) bool {
	if v < lo || v > hi {
		add(key, "%d is out of range (allowed %d..%d)", v, lo, hi)
		return false
	}
	return true
}

// CheckDuration enforces lo ≤ d ≤ hi.
func CheckDuration(add AddFunc, key string, d Duration, lo, hi time.Duration) {
	if v := d.Duration(); v < lo || v > hi {
		add(key, "%s is out of range (allowed %s..%s)", d, FormatDuration(lo), FormatDuration(hi))
	}
}

// CheckDurationAbove enforces other < d ≤ hi, where other is the value of
// the key named otherKey.
func CheckDurationAbove(add AddFunc, key string, d Duration, otherKey string, other Duration, hi time.Duration) {
	switch v := d.Duration(); {
	case v <= other.Duration():
		add(key, "%s must be greater than %s (%s)", d, otherKey, other)
	case v > hi:
		add(key, "%s is out of range (at most %s)", d, FormatDuration(hi))
	}
}
