package config

import (
	"github.com/tether-agent/tether/internal/confval"
	"github.com/tether-agent/tether/internal/proto/filetransfer"
	"github.com/tether-agent/tether/internal/proto/menderclient"
	"github.com/tether-agent/tether/internal/proto/portforward"
)

// The protocols own their sections: each defines its Config with its
// defaults and validation in its package (internal/proto/<name>), and
// this package only reads them from the files and the environment under
// upstream's key names. The names below keep the configuration's own
// vocabulary.
type (
	// FileTransferConfig is the FileTransfer section (proto 2).
	FileTransferConfig = filetransfer.Config
	// PortForwardConfig is the PortForward section (proto 3).
	PortForwardConfig = portforward.Config
	// MenderClientConfig is the MenderClient section (proto 4).
	MenderClientConfig = menderclient.Config
	// LimitsConfig is upstream's Limits tree (file-transfer restrictions).
	LimitsConfig = filetransfer.Limits
	// FileTransferLimits mirrors upstream's Limits.FileTransfer keys.
	FileTransferLimits = filetransfer.FileLimits
	// RateLimits mirrors upstream's Limits.FileTransfer.Counters.
	RateLimits = filetransfer.RateLimits
)

// validateProtocols adds each protocol section's problems under the
// section's key.
func (c *Config) validateProtocols(add confval.AddFunc) {
	for _, s := range []struct {
		key string
		err error
	}{
		{"FileTransfer", c.FileTransfer.Validate()},
		{"PortForward", c.PortForward.Validate()},
		{"MenderClient", c.MenderClient.Validate()},
	} {
		confval.Each(s.err, func(key, msg string) {
			if key == "" {
				add(s.key, "%s", msg)
				return
			}
			add(s.key+"."+key, "%s", msg)
		})
	}
}
