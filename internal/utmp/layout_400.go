//go:build arm64

package utmp

// native is this architecture's struct utmp.
var native = &layout400
