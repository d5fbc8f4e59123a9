package config

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
)

// envError is a TETHER_* variable whose value does not fit its key's type.
type envError struct {
	Key  string // the variable: TETHER_SESSIONS_MAXTOTAL
	Type string // the Go type of the key: uint32, config.Duration, []string
	Err  error
}

func (e *envError) Error() string {
	return fmt.Sprintf("environment variable %s: cannot use the value as %s: %v", e.Key, e.Type, e.Err)
}

func (e *envError) Unwrap() error { return e.Err }

// envDecoder is what a field type implements to read its own variable
// (Duration does).
type envDecoder interface{ Decode(value string) error }

// envField is one variable and the field it sets.
type envField struct {
	key   string
	field reflect.Value
}

// envFields walks v (a struct) the way the environment names its keys:
// prefix, then each exported field's name upper-cased, joined by '_';
// nested structs add their name to the prefix, embedded ones do not.
//
// This replaces github.com/kelseyhightower/envconfig with the same names and
// the same conversions (env_test.go compares the two on every key): its
// split_words support pulls in regexp and its usage output text/template,
// together about 300 KiB of a stripped arm64 binary, for nothing tether uses.
func envFields(prefix string, v reflect.Value, out []envField) []envField {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key := prefix + "_" + strings.ToUpper(f.Name)
		fv := v.Field(i)
		if f.Anonymous && fv.Kind() == reflect.Struct {
			// An embedded struct's fields are keys of its parent, as
			// in JSON and in envconfig.
			out = envFields(prefix, fv, out)
			continue
		}
		if fv.Kind() == reflect.Struct && !isEnvDecoder(fv) {
			out = envFields(key, fv, out)
			continue
		}
		out = append(out, envField{key: key, field: fv})
	}
	return out
}

func isEnvDecoder(v reflect.Value) bool {
	_, ok := v.Addr().Interface().(envDecoder)
	return ok
}

// loadEnv sets every field of cfg whose variable is in the environment,
// even to an empty value (an empty list, an empty string).
func loadEnv(prefix string, cfg *Config) error {
	for _, ef := range envFields(prefix, reflect.ValueOf(cfg).Elem(), nil) {
		value, ok := os.LookupEnv(ef.key)
		if !ok {
			continue
		}
		if err := setEnvField(ef.field, value); err != nil {
			return &envError{Key: ef.key, Type: ef.field.Type().String(), Err: err}
		}
	}
	return nil
}

// setEnvField converts value to field's type: a Decode method if it has
// one; numbers in Go syntax (0x, 0o, 0b prefixes) within the type's size;
// strconv.ParseBool's booleans; lists separated by commas.
func setEnvField(field reflect.Value, value string) error {
	if field.CanAddr() {
		if d, ok := field.Addr().Interface().(envDecoder); ok {
			return d.Decode(value)
		}
	}
	typ := field.Type()
	switch typ.Kind() {
	case reflect.String:
		field.SetString(value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(value, 0, typ.Bits())
		if err != nil {
			return err
		}
		field.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(value, 0, typ.Bits())
		if err != nil {
			return err
		}
		field.SetUint(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return err
		}
		field.SetBool(b)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(value, typ.Bits())
		if err != nil {
			return err
		}
		field.SetFloat(f)
	case reflect.Slice:
		sl := reflect.MakeSlice(typ, 0, 0)
		if strings.TrimSpace(value) != "" {
			parts := strings.Split(value, ",")
			sl = reflect.MakeSlice(typ, len(parts), len(parts))
			for i, p := range parts {
				if err := setEnvField(sl.Index(i), p); err != nil {
					return err
				}
			}
		}
		field.Set(sl)
	default:
		// A configuration key of another kind needs a case here;
		// TestEnvKindsHandled fails until it has one.
		return fmt.Errorf("unsupported type %s", typ)
	}
	return nil
}
