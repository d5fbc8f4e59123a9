// Package version holds what the build stamps into the binary with
// -ldflags "-X github.com/tether-agent/tether/internal/version.Version=..."
package version

import "runtime"

// Stamped at build time; these are the only variables the linker may set.
var (
	Version = "unknown"
	Commit  = "unknown"
	Date    = "unknown"
)

// GoVersion is the toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }
