package filetransfer

import (
	"log/slog"

	"github.com/tether-agent/tether/internal/fdbudget"
	"github.com/tether-agent/tether/internal/identity"
)

// Config is the FileTransfer section of the configuration file: proto
// 2's switch and the account it runs as (key names are the field names;
// internal/config maps the file and the TETHER_FILETRANSFER_* variables
// onto it).
type Config struct {
	Disable bool
	// User is the account whose rights every file operation has; empty
	// means the configuration's User (the shells' account). Naming root
	// gives file transfer root's rights, and the daemon warns at start.
	User string
	// MaxTransfers bounds the downloads and uploads running at once on
	// the device; one more is refused with a file-transfer error. 0 means
	// DefaultMaxTransfers. Each transfer holds up to three file
	// descriptors and the peer's window of about 85 KiB.
	MaxTransfers uint32
}

// DefaultMaxTransfers is Config.MaxTransfers when unset: far more than
// the server's REST calls run at once against one device, and 96
// descriptors at most.
const DefaultMaxTransfers = 32

// DefaultConfig is the section's built-in defaults (all zero: on, the
// shells' account, DefaultMaxTransfers).
func DefaultConfig() Config { return Config{} }

// Validate returns the problems of c; every value of its keys is valid.
func (c Config) Validate() error { return nil }

// Limits is upstream's Limits tree of the configuration file, all of it
// about file transfer; its FileTransfer part applies only when Enabled.
type Limits struct {
	Enabled      bool
	FileTransfer FileLimits
}

// FileLimits mirrors upstream's Limits.FileTransfer keys.
type FileLimits struct {
	Chroot           string
	FollowSymLinks   bool
	AllowOverwrite   bool
	OwnerPut         string
	GroupPut         string
	OwnerGet         []string
	GroupGet         []string
	Umask            string // octal text
	MaxFileSize      uint64 // bytes, 0 = unlimited
	Counters         RateLimits
	AllowSuid        bool
	RegularFilesOnly bool
	// Upstream forces these to true regardless of the file; tether keeps
	// what the file says and leaves the policy to the feature's owner.
	PreserveMode  bool
	PreserveOwner bool
}

// RateLimits mirrors upstream's Limits.FileTransfer.Counters.
type RateLimits struct {
	MaxBytesTxPerMinute uint64
	MaxBytesRxPerMinute uint64
}

// Deps is what the daemon lends the protocol besides its configuration.
type Deps struct {
	Log *slog.Logger
	// Identity is the account of Config.User (or of the shells).
	Identity *identity.Identity
	// StateDir is the runtime directory (the uploads' journal).
	StateDir string
	// FDs is the descriptor budget shared with port forwarding.
	FDs *fdbudget.Budget
}

// FromConfig builds the protocol from its section and the Limits tree of
// the configuration (whose Disable the caller has looked at); a
// malformed Limits.FileTransfer.Umask is an error.
func FromConfig(c Config, l Limits, d Deps) (*Protocol, error) {
	if d.Identity != nil && d.Identity.UID == 0 && d.Log != nil {
		d.Log.Warn("file transfer runs as root: a remote user can read and write every file", "user", d.Identity.Name)
	}
	return New(Options{Log: d.Log, Identity: d.Identity, Limits: l, StateDir: d.StateDir,
		MaxTransfers: int(c.MaxTransfers), FDs: d.FDs})
}
