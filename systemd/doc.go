// Package systemd holds no code: this directory ships tether.service and
// tether.conf, and the package's tests check them (check.sh runs
// systemd-analyze on the unit).
package systemd
