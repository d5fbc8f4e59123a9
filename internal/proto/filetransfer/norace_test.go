//go:build !race

package filetransfer

const raceEnabled = false
