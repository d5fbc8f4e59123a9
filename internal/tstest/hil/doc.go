// Package hiltests holds the hardware-in-the-loop tests: tether in QEMU
// guests of three architectures (arm64, armhf, amd64), in two flavours (a
// busybox initramfs and a Debian systemd system), driven only through the
// mock Mender server that the test runs on the host's loopback.
//
// The tests carry the build tag "hil", so `go test ./...` leaves them out;
// `make hil` builds the guest images (qemu/) and runs them. The guest
// bench (bench_test.go) also needs the tag "hilbench" and runs with
// `make bench-guests`. See docs/testing.md, "Hardware-in-the-loop
// tests (QEMU)".
package hiltests
