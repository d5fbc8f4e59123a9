#!/usr/bin/env bash
# setup-host.sh: installs what the HIL guests need on a Debian host, and
# nothing when it is already there; makes foreign-architecture binaries
# runnable under qemu-user (binfmt_misc) for mmdebstrap's second stage.
#
# Without root or sudo it installs nothing: it stops and prints the exact
# command to run. It never lets the suite skip silently.
source "$(dirname "$0")/common.sh"

declare -A need_cmd=(
  [qemu-system-aarch64]=qemu-system-arm [qemu-system-arm]=qemu-system-arm
  [qemu-system-x86_64]=qemu-system-x86 [qemu-aarch64-static]=qemu-user-static
  [qemu-arm-static]=qemu-user-static [mmdebstrap]=mmdebstrap [depmod]=kmod [modprobe]=kmod
  [cpio]=cpio [arch-test]=arch-test [dpkg-deb]=dpkg [apt-get]=apt [systemctl]=systemd
)
pkgs=()
for c in "${!need_cmd[@]}"; do
  command -v "$c" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null 2>&1 || pkgs+=("${need_cmd[$c]}")
done
[ -e "$HIL_KEYRING" ] || pkgs+=(debian-archive-keyring)
mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u | sed '/^$/d')

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=sudo
  else
    sudo=none
  fi
fi

if [ ${#pkgs[@]} -gt 0 ]; then
  cmd="apt-get install -y --no-install-recommends ${pkgs[*]}"
  if [ "$sudo" = none ]; then
    die "the HIL suite needs packages that are not installed; as root run:
    apt-get update && $cmd"
  fi
  log "setup: installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || $sudo apt-get update -qq || true
  $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
    die "installing failed; as root run: apt-get update && $cmd"
fi

# mmdebstrap runs the rootfs's maintainer scripts: arm64 and armhf binaries
# must run under qemu-user. Debian registers the handlers when binfmt_misc
# is mounted at install time; containers and fresh VMs often do not have it
# mounted, so mount it and register the two we need from Debian's own
# binfmt.d files (the F flag keeps them working inside the chroot).
bm=/proc/sys/fs/binfmt_misc
run_root() { if [ -z "$sudo" ]; then "$@"; else $sudo "$@"; fi; }
for a in aarch64 arm; do
  [ -e "$bm/qemu-$a" ] && continue
  [ "$sudo" = none ] && die "qemu-user is not registered with binfmt_misc; as root run:
    mount -t binfmt_misc binfmt_misc $bm; cat /usr/lib/binfmt.d/qemu-$a.conf >$bm/register"
  if [ ! -e "$bm/register" ]; then
    run_root mount -t binfmt_misc binfmt_misc "$bm" || die "cannot mount binfmt_misc on $bm"
  fi
  [ -e "$bm/qemu-$a" ] && continue
  conf=/usr/lib/binfmt.d/qemu-$a.conf
  [ -e "$conf" ] || die "$conf missing (package qemu-user-static)"
  log "setup: registering qemu-$a with binfmt_misc"
  grep -v '^#' "$conf" | run_root tee "$bm/register" >/dev/null || die "cannot register $conf with binfmt_misc"
done
for a in aarch64 arm; do
  [ -e "$bm/qemu-$a" ] || die "binfmt_misc handler qemu-$a is missing after registration"
done

command -v go >/dev/null || die "Go is required (https://go.dev/doc/install)"
