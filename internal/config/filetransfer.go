package config

// FileTransferConfig is proto 2's switch and the account it runs as.
type FileTransferConfig struct {
	Disable bool
	// User is the account whose rights every file operation has; empty
	// means User (the shells' account). Naming root gives file transfer
	// root's rights, and the daemon warns at start.
	User string
	// MaxTransfers bounds the downloads and uploads running at once on
	// the device; one more is refused with a file-transfer error. 0 means
	// DefaultFileTransferMaxTransfers. Each transfer holds up to three
	// file descriptors and the peer's window of about 85 KiB.
	MaxTransfers uint32
}

// DefaultFileTransferMaxTransfers is FileTransfer.MaxTransfers when unset:
// far more than the server's REST calls run at once against one device,
// and 96 descriptors at most.
const DefaultFileTransferMaxTransfers = 32
