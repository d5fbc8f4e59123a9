// Package containertest builds tether's container image with podman and
// runs it for real: against the mock Mender server on the host's loopback
// (host networking), with a terminal opened through the server, a rotated
// token file, the host reached through host-shell, and a SIGTERM stop that
// must exit 0 within 2 s and leave nothing running. The tests carry the
// build tag container; `make container-test` runs them (and CI, through
// `make test`).
package containertest
