package config

import (
	"errors"
	"reflect"
	"testing"

	"github.com/kelseyhightower/envconfig"
)

// envSamples are values tried on every key: good and bad numbers in the
// bases envconfig reads, signs, overflows, booleans, durations, lists with
// empty and blank items, and the empty value itself.
var envSamples = []string{
	"", " ", "0", "1", "-1", "42", "0x1f", "0o17", "017", "0b101", "1_000", "+7",
	"65535", "65536", "4294967296", "18446744073709551615", "18446744073709551616",
	"1.5", "1e3", "true", "false", "T", "FALSE", "yes", "30s", "1m30s", "500ms", "2.5",
	"soon", "a,b", "a,,b", " a , b ", ",", "-i,-l", "dbus", "/bin/sh",
}

// TestEnvMatchesEnvconfig pins loadEnv, which replaced envconfig in the
// binary to save flash, to envconfig's result on every key and sample
// value: the same field values, and an error exactly when envconfig gives
// one, naming the same key and type, wrapping the same cause.
func TestEnvMatchesEnvconfig(t *testing.T) {
	keys := envFields(EnvPrefix, reflect.ValueOf(&Config{}).Elem(), nil)
	if len(keys) < 50 {
		t.Fatalf("only %d keys found", len(keys))
	}
	for _, ef := range keys {
		for _, v := range envSamples {
			clearEnv(t)
			t.Setenv(ef.key, v)
			want, got := Default(), Default()
			werr := envconfig.Process(EnvPrefix, want)
			gerr := loadEnv(EnvPrefix, got)
			if (werr == nil) != (gerr == nil) {
				t.Errorf("%s=%q: envconfig error %v, loadEnv error %v", ef.key, v, werr, gerr)
				continue
			}
			if werr != nil {
				var pe *envconfig.ParseError
				var ee *envError
				if !errors.As(werr, &pe) || !errors.As(gerr, &ee) {
					t.Errorf("%s=%q: errors of unexpected types: %T, %T", ef.key, v, werr, gerr)
					continue
				}
				if pe.KeyName != ee.Key || pe.TypeName != ee.Type || pe.Err.Error() != ee.Err.Error() {
					t.Errorf("%s=%q: envconfig says %s/%s/%v, loadEnv %s/%s/%v",
						ef.key, v, pe.KeyName, pe.TypeName, pe.Err, ee.Key, ee.Type, ee.Err)
				}
				continue
			}
			if !reflect.DeepEqual(want, got) {
				t.Errorf("%s=%q: envconfig gives %+v, loadEnv %+v", ef.key, v, want, got)
			}
		}
	}
}

// TestEnvKindsHandled: every key's type is one loadEnv converts, so a new
// configuration field of another kind is caught here, not by a user.
func TestEnvKindsHandled(t *testing.T) {
	for _, ef := range envFields(EnvPrefix, reflect.ValueOf(&Config{}).Elem(), nil) {
		probe := reflect.New(ef.field.Type()).Elem()
		if err := setEnvField(probe, ""); err != nil && err.Error() == "unsupported type "+ef.field.Type().String() {
			t.Errorf("%s: %v", ef.key, err)
		}
	}
}

// TestEnvKeysIncludeNested: nested structs add their names; they are no key themselves.
func TestEnvKeysIncludeNested(t *testing.T) {
	k := envKeys()
	for _, want := range []string{"TETHER_USER", "TETHER_LIMITS_FILETRANSFER_COUNTERS_MAXBYTESTXPERMINUTE", "TETHER_LINK_PINGINTERVAL"} {
		if !k[want] {
			t.Errorf("envKeys lacks %s", want)
		}
	}
	if k["TETHER_LIMITS"] || k["TETHER_LINK_PINGINTERVAL_"] {
		t.Errorf("envKeys has a struct's own name: %v", k)
	}
}
