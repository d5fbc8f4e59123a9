#!/usr/bin/env bash
# Prepares this machine for the "by hand" steps of docs/demo.md (run it as root, e.g.
# with sudo, from the repository):
#   1. dbus-daemon is installed and the system bus runs,
#   2. the auth service's bus policy (only root may own, call and hear
#      io.mender.AuthenticationManager) is in /etc/dbus-1/system.d/ and
#      the system bus has reloaded its configuration,
#   3. /etc/tether/tether.conf exists (kept if it does): shells run as the
#      user who called sudo (or $TETHER_DEMO_USER).
# It honours DBUS_SYSTEM_BUS_ADDRESS, and BYHAND_ETC instead of /etc, so a
# test can run it against a bus and a directory of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
etc=${BYHAND_ETC:-/etc}
user=${TETHER_DEMO_USER:-${SUDO_USER:-$(id -un)}}

if [ "$(id -u)" -ne 0 ]; then
  echo "by-hand-setup: run as root (sudo $0): it writes to $etc and reloads the system bus" >&2
  exit 1
fi

if ! command -v dbus-daemon >/dev/null || ! command -v dbus-send >/dev/null; then
  echo "by-hand-setup: installing dbus"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dbus
fi

install -d -m 0755 "$etc/dbus-1/system.d"
install -m 0644 cmd/mock-authd/io.mender.AuthenticationManager.conf "$etc/dbus-1/system.d/"
echo "by-hand-setup: installed $etc/dbus-1/system.d/io.mender.AuthenticationManager.conf"

bus_up() {
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.GetId >/dev/null 2>&1
}
if bus_up; then
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.ReloadConfig >/dev/null
  echo "by-hand-setup: the system bus reloaded its configuration"
elif [ -z "${DBUS_SYSTEM_BUS_ADDRESS:-}" ]; then
  # Not running: under systemd start the unit, elsewhere (a container)
  # the daemon itself.
  if [ -d /run/systemd/system ]; then
    systemctl start dbus
  else
    install -d -m 0755 /run/dbus
    dbus-daemon --system --fork
  fi
  for _ in $(seq 100); do bus_up && break; sleep 0.05; done
  bus_up || { echo "by-hand-setup: the system bus did not start" >&2; exit 1; }
  echo "by-hand-setup: started the system bus"
else
  echo "by-hand-setup: no bus answers at DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SYSTEM_BUS_ADDRESS" >&2
  exit 1
fi

conf=$etc/tether/tether.conf
if [ -e "$conf" ]; then
  echo "by-hand-setup: keeping the existing $conf"
else
  install -d -m 0755 "$etc/tether"
  tmp=$(mktemp "$etc/tether/.tether.conf.XXXXXX")
  cat >"$tmp" <<CONF
{
  "User": "$user",
  "ShellCommand": "/bin/sh",
  "ShellArguments": ["-l"]
}
CONF
  chmod 0600 "$tmp"
  mv "$tmp" "$conf"
  echo "by-hand-setup: wrote $conf (shells run as $user)"
fi
