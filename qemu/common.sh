# shellcheck shell=bash
# Shared by the qemu/ scripts: the architecture table, the build directory
# layout and a private apt root per guest architecture.
#
# Guest packages come from Debian's archive only, through apt with its own
# state under $HIL_BUILD/apt/<arch>: the host's dpkg architectures, sources
# and package lists are never touched.

set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

HIL_QEMU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HIL_REPO=$(cd "$HIL_QEMU_DIR/.." && pwd)
HIL_BUILD=${HIL_BUILD:-$HIL_REPO/build/hil}
HIL_SUITE=${HIL_SUITE:-bookworm}
HIL_MIRROR=${HIL_MIRROR:-http://deb.debian.org/debian}
HIL_SECURITY_MIRROR=${HIL_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
HIL_KEYRING=${HIL_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
HIL_ALL_ARCHES="arm64 armhf amd64"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# arch_vars ARCH sets the A_* variables describing one guest architecture
# (Debian architecture names).
arch_vars() {
  A_ARCH=$1
  case $1 in
  arm64)
    A_GOARCH=arm64 A_GOARM=""
    A_TRIPLET=aarch64-linux-gnu A_LDSO=/lib/ld-linux-aarch64.so.1
    A_KERNEL_PKG=linux-image-cloud-arm64
    A_QEMU=qemu-system-aarch64
    # -cpu max would emulate pointer authentication, which is slow.
    A_QEMU_ARGS="-M virt -cpu cortex-a57"
    A_CONSOLE=ttyAMA0 A_UNAME=aarch64 A_BINFMT=qemu-aarch64
    ;;
  armhf)
    A_GOARCH=arm A_GOARM=7
    A_TRIPLET=arm-linux-gnueabihf A_LDSO=/lib/ld-linux-armhf.so.3
    # There is no cloud flavour for armhf.
    A_KERNEL_PKG=linux-image-armmp
    A_QEMU=qemu-system-arm
    # Without highmem=off the non-LPAE armmp kernel cannot claim the PCIe
    # ECAM window: no virtio-pci, no network.
    A_QEMU_ARGS="-M virt,highmem=off -cpu cortex-a15"
    A_CONSOLE=ttyAMA0 A_UNAME=armv7l A_BINFMT=qemu-arm
    ;;
  amd64)
    A_GOARCH=amd64 A_GOARM=""
    A_TRIPLET=x86_64-linux-gnu A_LDSO=/lib64/ld-linux-x86-64.so.2
    A_KERNEL_PKG=linux-image-cloud-amd64
    A_QEMU=qemu-system-x86_64
    A_QEMU_ARGS="-M q35 -cpu max"
    A_CONSOLE=ttyS0 A_UNAME=x86_64 A_BINFMT=""
    ;;
  *) die "unknown architecture '$1' (known: $HIL_ALL_ARCHES)" ;;
  esac
  A_APT=$HIL_BUILD/apt/$1
  A_DEBS=$HIL_BUILD/debs/$1
}

# apt_init writes the private apt root of the current architecture.
apt_init() {
  local r=$A_APT
  mkdir -p "$r/etc/apt/apt.conf.d" "$r/etc/apt/preferences.d" "$r/etc/apt/sources.list.d" \
    "$r/var/lib/apt/lists/partial" "$r/var/cache/apt/archives/partial" "$r/var/lib/dpkg" "$A_DEBS"
  [ -e "$r/var/lib/dpkg/status" ] || : >"$r/var/lib/dpkg/status"
  cat >"$r/etc/apt/apt.conf" <<EOF
Dir "$r/";
Dir::State::status "$r/var/lib/dpkg/status";
Dir::Etc::Parts "$r/etc/apt/apt.conf.d";
APT::Architecture "$A_ARCH";
APT::Architectures { "$A_ARCH"; };
APT::Sandbox::User "root";
APT::Install-Recommends "false";
Acquire::Languages "none";
Acquire::Retries "3";
EOF
  cat >"$r/etc/apt/sources.list" <<EOF
deb [signed-by=$HIL_KEYRING] $HIL_MIRROR $HIL_SUITE main
deb [signed-by=$HIL_KEYRING] $HIL_MIRROR $HIL_SUITE-updates main
deb [signed-by=$HIL_KEYRING] $HIL_SECURITY_MIRROR $HIL_SUITE-security main
EOF
}

hapt() { APT_CONFIG=$A_APT/etc/apt/apt.conf "$@"; }

# apt_update refreshes the private package lists at most once per
# HIL_APT_MAX_AGE seconds (default 6 h). The security index of armhf has
# been seen failing with "File has unexpected size" while the mirror syncs:
# retry, and carry on without it (saying so) when only that index failed.
apt_update() {
  apt_init
  local stamp=$A_APT/updated max=${HIL_APT_MAX_AGE:-21600}
  if [ -e "$stamp" ] && [ $(($(date +%s) - $(stat -c %Y "$stamp"))) -lt "$max" ]; then
    return 0
  fi
  log "$A_ARCH: apt-get update (private root $A_APT)"
  local try
  for try in 1 2; do
    if hapt apt-get -q update >"$A_APT/update.log" 2>&1; then
      touch "$stamp"
      return 0
    fi
    log "$A_ARCH: apt-get update failed (try $try):"
    grep -E '^(E|W):' "$A_APT/update.log" >&2 || tail -5 "$A_APT/update.log" >&2
    sleep 3
  done
  if ls "$A_APT"/var/lib/apt/lists/*_dists_"${HIL_SUITE}"_main_binary-"${A_ARCH}"_Packages >/dev/null 2>&1; then
    log "$A_ARCH: WARNING: continuing with the package lists that did download (see $A_APT/update.log)"
    touch "$stamp"
    return 0
  fi
  die "$A_ARCH: apt-get update failed; see $A_APT/update.log"
}

# pkg_version PKG prints the candidate version of PKG.
pkg_version() {
  hapt apt-cache policy "$1" | awk '/Candidate:/ && !n++ {print $2}'
}

# fetch_debs PKG[=VERSION]... downloads the given packages (exact names,
# no dependency resolution; candidate version unless given) into the
# architecture's .deb cache in one apt call, and prints the paths of the
# .deb files. Files already there are reused.
fetch_debs() {
  local p v f missing=() paths=()
  for p in "$@"; do
    if [[ $p == *=* ]]; then v=${p#*=} p=${p%%=*}; else v=$(pkg_version "$p"); fi
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "$A_ARCH: package $p not found in $HIL_SUITE"
    # apt names files name_version_arch.deb with the epoch colon escaped.
    f=$(first "$A_DEBS/${p}_${v//:/%3a}_*.deb")
    [ -n "$f" ] || missing+=("$p=$v")
    paths+=("$p=$v")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    (cd "$A_DEBS" && hapt apt-get -q download "${missing[@]}" >"$A_APT/download.log" 2>&1) ||
      { cat "$A_APT/download.log" >&2; die "$A_ARCH: apt-get download failed"; }
  fi
  for p in "${paths[@]}"; do
    v=${p#*=} p=${p%%=*}
    f=$(first "$A_DEBS/${p}_${v//:/%3a}_*.deb")
    [ -n "$f" ] || die "$A_ARCH: $p=$v did not download"
    echo "$f"
  done
}

# first GLOB prints the first file matching GLOB, if any. (No "| head":
# under pipefail a writer cut off by head fails the pipeline.)
first() {
  local m
  m=$(compgen -G "$1" || true)
  printf '%s' "${m%%$'\n'*}"
}

# closure PKG... prints "name=version" for every package apt would install
# on an empty system to get PKG... (patterns such as ?essential allowed).
closure() {
  hapt apt-get -s -q install "$@" | awk '/^Inst / {gsub(/[()]/, "", $3); print $2 "=" $3}' | sort
}

# kernel_pkg prints the versioned kernel image package the metapackage
# currently points at (linux-image-6.1.0-NN-cloud-arm64, ...).
kernel_pkg() {
  hapt apt-cache depends "$A_KERNEL_PKG" | awk '/Depends: linux-image-/ && !n++ {print $2}'
}

# go_build PKG OUT builds a static binary for the current architecture.
go_build() {
  (cd "$HIL_REPO" && CGO_ENABLED=0 GOOS=linux GOARCH=$A_GOARCH GOARM=$A_GOARM \
    go build -trimpath -ldflags '-s -w' -o "$2" "$1")
}

# cpio_dir DIR OUT packs DIR as an uncompressed newc archive: QEMU loads
# the initrd into guest memory as is, and an uncompressed archive spares
# the emulated CPU a decompression that costs seconds under TCG.
cpio_dir() {
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R +0:+0 >"$2.tmp") && mv "$2.tmp" "$2"
}

# cpio_dir_keep_owner DIR OUT packs DIR keeping file owners (rootfs trees).
cpio_dir_keep_owner() {
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc >"$2.tmp") && mv "$2.tmp" "$2"
}

# kernel_prepare unpacks the current kernel of the architecture (once per
# kernel version) and runs depmod over it: the .debs ship no modules.dep.
# Sets K_ROOT (the unpacked tree), K_VER (uname -r) and K_IMAGE.
kernel_prepare() {
  local pkg deb
  pkg=$(kernel_pkg)
  [ -n "$pkg" ] || die "$A_ARCH: cannot resolve $A_KERNEL_PKG"
  K_VER=${pkg#linux-image-}
  K_ROOT=$HIL_BUILD/$A_ARCH/kernel-$(pkg_version "$pkg")-$K_VER
  K_IMAGE=$K_ROOT/boot/vmlinuz-$K_VER
  if [ ! -e "$K_ROOT/.done" ]; then
    # A new kernel replaces the old ones of this architecture.
    mkdir -p "$HIL_BUILD/$A_ARCH"
    find "$HIL_BUILD/$A_ARCH" -maxdepth 1 -name 'kernel-*' -type d -exec rm -rf {} +
    deb=$(fetch_debs "$pkg")
    log "$A_ARCH: unpacking kernel $K_VER"
    rm -rf "$K_ROOT" && mkdir -p "$K_ROOT"
    dpkg-deb -x "$deb" "$K_ROOT"
    depmod -b "$K_ROOT" "$K_VER"
    touch "$K_ROOT/.done"
  fi
}

# kernel_modules MODULE... prints the module files (relative to
# lib/modules/K_VER) needed for MODULE..., dependencies first, each once.
# Modules built into the kernel print nothing.
kernel_modules() {
  local m
  for m in "$@"; do
    modprobe -d "$K_ROOT" -S "$K_VER" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}' ||
      die "$A_ARCH: module $m unknown to kernel $K_VER"
  done | sed "s|^$K_ROOT/lib/modules/$K_VER/||" | awk '!seen[$0]++'
}

# Modules every guest needs: virtio-pci and virtio-net (modular in all
# three kernels), autofs4 for systemd.
HIL_MODULES="virtio_pci virtio_net"

# json_array WORD... prints a JSON array of strings (words without quotes
# or backslashes, which is all the guest descriptions hold).
json_array() {
  local w sep="" out="["
  for w in "$@"; do
    out+="$sep\"$w\""
    sep=","
  done
  printf '%s]' "$out"
}
