//go:build race

package filetransfer

// raceEnabled: the race detector allocates on its own in channel and
// sync operations, so allocation counts mean nothing under it.
const raceEnabled = true
