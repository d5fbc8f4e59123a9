package auth

import "unsafe"

// unsafePointer views the start of b (an inotify event in the kernel's
// layout) as a pointer.
func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
