package menderclient

import (
	"testing"
	"time"

	"github.com/tether-agent/tether/internal/confval"
)

// The section's defaults are upstream's binaries and valid; Validate
// names each bad key relative to the section.
func TestConfig(t *testing.T) {
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if len(d.Binaries) != 2 || d.Binaries[0] != "/usr/bin/mender-update" {
		t.Errorf("default binaries %v", d.Binaries)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"relative binary", func(c *Config) { c.Binaries = []string{"mender"} }, "Binaries"},
		{"no binary", func(c *Config) { c.Binaries = nil }, "Binaries"},
		{"timeout", func(c *Config) { c.Timeout = confval.Duration(time.Millisecond) }, "Timeout"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		var keys []string
		confval.Each(c.Validate(), func(key, _ string) { keys = append(keys, key) })
		if len(keys) != 1 || keys[0] != tc.want {
			t.Errorf("%s: problems with %v, want %s", tc.name, keys, tc.want)
		}
	}
}
