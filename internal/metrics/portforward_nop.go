//go:build nometrics

package metrics

// PortForwardOpened does nothing in the nometrics build.
func (*Metrics) PortForwardOpened(string) {}

// PortForwardClosed does nothing in the nometrics build.
func (*Metrics) PortForwardClosed(string) {}

// PortForwardBytes does nothing in the nometrics build.
func (*Metrics) PortForwardBytes(string, int) {}

// PortForwardDenied does nothing in the nometrics build.
func (*Metrics) PortForwardDenied(string) {}

// PortForwardIgnored does nothing in the nometrics build.
func (*Metrics) PortForwardIgnored(string) {}
