//go:build nometrics

package metrics

// IdentityConflict does nothing in the nometrics build.
func (*Metrics) IdentityConflict(bool) {}

// IdentityConflictClose does nothing in the nometrics build.
func (*Metrics) IdentityConflictClose() {}
