#!/usr/bin/env bash
# Installs what building and testing tether needs on a Debian machine with
# Go, and nothing when it is already there. Safe to run again.
set -euo pipefail

need=()
command -v dbus-daemon >/dev/null || need+=(dbus)
command -v make >/dev/null || need+=(make)
command -v ps >/dev/null || need+=(procps)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v tmux >/dev/null || need+=(tmux)
# The web console's bundle check (npm) and its browser tests (chromium, and
# a monospace font for readable screenshots).
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need+=(fonts-dejavu-core)
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${need[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The packaged configuration (systemd/tether.conf) names the dedicated
# shell account; its test loads it, and loading checks the account exists.
if ! id tether-shell >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: creating the system account tether-shell"
  $sudo useradd --system --home-dir /var/lib/tether-shell --create-home --shell /bin/sh \
    --comment "tether remote shells" tether-shell
fi

command -v go >/dev/null || { echo "setup: Go is required (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
