package config

// FileTransferConfig is proto 2's switch and the account it runs as.
type FileTransferConfig struct {
	Disable bool
	// User is the account whose rights every file operation has; empty
	// means User (the shells' account). Naming root gives file transfer
	// root's rights, and the daemon warns at start.
	User string
}
