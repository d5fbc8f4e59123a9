#!/usr/bin/env bash
# build-systemd.sh ARCH: the systemd HIL guest of one architecture.
#
# A small Debian rootfs (essential + systemd, dbus, udev, kmod, iproute2,
# procps) made by mmdebstrap, booted as an initramfs whose /init is
# systemd. tether is installed on top exactly as a package would install
# it: /usr/bin/tether, the unit and the default configuration from
# systemd/, enabled with systemctl. Test-only additions: mock-authd as a
# service on the system bus (qemu/systemd/mock-authd.service, with the DBus
# policy from cmd/mock-authd), the guest network, and a drop-in that makes
# shells run as root and exposes the metrics to QEMU's port forward.
#
# The rootfs is the slow part (minutes under qemu-user for arm64/armhf); it
# is cached as an uncompressed cpio keyed by the architecture, the recipe
# and the version of every package in it, so it is rebuilt only when one of
# them changes. The tether layer is a second cpio, rebuilt every time, that
# the kernel unpacks on top.
source "$(dirname "$0")/common.sh"

rootfs_only=""
if [ "${1:-}" = --rootfs-only ]; then
  rootfs_only=1
  shift
fi
[ $# -eq 1 ] || die "usage: $0 [--rootfs-only] ARCH"
arch_vars "$1"
[ "$(id -u)" -eq 0 ] || die "building the systemd guest needs root (mmdebstrap --mode=root); run as root or through sudo"
apt_update
kernel_prepare

# Only the suites whose index did download (see apt_update).
sources=$A_APT/sources.ok
: >"$sources"
while read -r line; do
  set -- $line
  suite=${@: -2:1}
  if compgen -G "$A_APT/var/lib/apt/lists/*_dists_${suite}_main_binary-${A_ARCH}_Packages*" >/dev/null; then
    echo "$line" >>"$sources"
  else
    log "$A_ARCH: WARNING: building without $suite (its index did not download)"
  fi
done <"$A_APT/etc/apt/sources.list"

PACKAGES="systemd systemd-sysv dbus udev kmod iproute2 procps"
MMDEBSTRAP_OPTS=(
  --mode=root --variant=essential --architectures="$A_ARCH"
  --include="${PACKAGES// /,}"
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --aptopt='Acquire::Retries "3"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --customize-hook='echo tether-hil >"$1/etc/hostname"'
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*_Packages'
)
# Everything that shapes the rootfs goes into its cache key: architecture,
# options, sources and the version of every package apt resolves.
versions=$(closure '?essential' $PACKAGES)
[ -n "$versions" ] || die "$A_ARCH: cannot resolve the rootfs packages"
key=$(printf '%s\n' "$A_ARCH" "$HIL_SUITE" "${MMDEBSTRAP_OPTS[@]}" "$(cat "$sources")" "$versions" | sha256sum | cut -c1-16)
cache=$HIL_BUILD/cache
base=$cache/rootfs-$A_ARCH-$key.cpio
mkdir -p "$cache"

if [ ! -e "$base" ]; then
  if [ -n "$A_BINFMT" ] && [ ! -e "/proc/sys/fs/binfmt_misc/$A_BINFMT" ]; then
    die "$A_ARCH: no binfmt_misc handler $A_BINFMT for the rootfs's maintainer scripts; run qemu/setup-host.sh"
  fi
  log "$A_ARCH: building the rootfs with mmdebstrap (cache key $key; takes minutes for foreign architectures)"
  t0=$(date +%s)
  tmp=$cache/rootfs-$A_ARCH-$key.tmp
  rm -rf "$tmp"
  mapfile -t mirrors <"$sources"
  mlog=$cache/rootfs-$A_ARCH.log
  if ! mmdebstrap "${MMDEBSTRAP_OPTS[@]}" "$HIL_SUITE" "$tmp" "${mirrors[@]}" >"$mlog" 2>&1; then
    # mmdebstrap runs its own apt-get update, which can meet the same
    # half-synced security index as apt_update: try once more without it.
    grep -q -- '-security' "$mlog" || { tail -30 "$mlog" >&2; die "$A_ARCH: mmdebstrap failed (log: $mlog)"; }
    log "$A_ARCH: WARNING: mmdebstrap failed on the security suite; retrying without it"
    mapfile -t mirrors < <(grep -v -- '-security ' "$sources")
    rm -rf "$tmp"
    mmdebstrap "${MMDEBSTRAP_OPTS[@]}" "$HIL_SUITE" "$tmp" "${mirrors[@]}" >"$mlog" 2>&1 ||
      { tail -30 "$mlog" >&2; die "$A_ARCH: mmdebstrap failed (log: $mlog)"; }
  fi
  printf '%s\n' "$versions" >"$tmp/etc/hil-rootfs-packages"
  cpio_dir_keep_owner "$tmp" "$base"
  rm -rf "$tmp"
  # Older rootfs builds of this architecture are stale now.
  find "$cache" -maxdepth 1 -name "rootfs-$A_ARCH-*.cpio" ! -name "$(basename "$base")" -delete
  log "$A_ARCH: rootfs built in $(($(date +%s) - t0)) s ($(du -h "$base" | cut -f1))"
else
  log "$A_ARCH: rootfs from cache ($(basename "$base"))"
fi
[ -z "$rootfs_only" ] || exit 0

# The tether layer. Paths go through /usr only: the base is merged-/usr,
# and a ./lib directory in a later archive would replace its /lib symlink.
out=$HIL_BUILD/$A_ARCH/systemd
stage=$out/overlay
rm -rf "$stage" && mkdir -p "$stage/usr/bin" "$stage/usr/lib/systemd/system" "$stage/etc/tether" \
  "$stage/usr/share/doc/tether" "$stage/usr/share/dbus-1/system.d" "$stage/usr/libexec/tether-hil" \
  "$stage/etc/systemd/system/tether.service.d" "$stage/etc/modules-load.d"

log "$A_ARCH: systemd guest: tether and mock-authd ($A_GOARCH${A_GOARM:+ v$A_GOARM})"
go_build ./cmd/tether "$stage/usr/bin/tether"
go_build ./cmd/mock-authd "$stage/usr/bin/mock-authd"

# As the package installs it (systemd/README.md).
install -m 0644 "$HIL_REPO/systemd/tether.service" "$stage/usr/lib/systemd/system/tether.service"
install -m 0600 "$HIL_REPO/systemd/tether.conf" "$stage/etc/tether/tether.conf"
install -m 0644 "$HIL_REPO/systemd/README.md" "$stage/usr/share/doc/tether/README.md"
install -D -m 0644 "$HIL_REPO/systemd/tether.sysusers" "$stage/usr/lib/sysusers.d/tether.conf"
install -D -m 0644 "$HIL_REPO/systemd/tether.tmpfiles" "$stage/usr/lib/tmpfiles.d/tether.conf"
# The test double and the test's own settings.
install -m 0644 "$HIL_REPO/cmd/mock-authd/io.mender.AuthenticationManager.conf" \
  "$stage/usr/share/dbus-1/system.d/io.mender.AuthenticationManager.conf"
install -m 0644 "$HIL_QEMU_DIR/systemd/mock-authd.service" "$HIL_QEMU_DIR/systemd/hil-network.service" \
  "$stage/usr/lib/systemd/system/"
install -m 0755 "$HIL_QEMU_DIR/systemd/mock-authd-start" "$stage/usr/libexec/tether-hil/mock-authd-start"
install -m 0644 "$HIL_QEMU_DIR/systemd/tether-hil.conf" "$stage/etc/systemd/system/tether.service.d/hil.conf"
install -m 0644 "$HIL_QEMU_DIR/systemd/modules.conf" "$stage/etc/modules-load.d/hil.conf"
systemctl --root="$stage" --quiet enable tether.service mock-authd.service hil-network.service

# Kernel modules: only what the guest loads, with a modules.dep of their
# own so that udev and systemd find them by name and alias.
mapfile -t mods < <(kernel_modules $HIL_MODULES autofs4)
for m in "${mods[@]}"; do
  install -D -m 0644 "$K_ROOT/lib/modules/$K_VER/$m" "$stage/usr/lib/modules/$K_VER/$m"
done
cp "$K_ROOT/lib/modules/$K_VER/modules.builtin" "$K_ROOT/lib/modules/$K_VER/modules.order" \
  "$K_ROOT/lib/modules/$K_VER/modules.builtin.modinfo" "$stage/usr/lib/modules/$K_VER/" 2>/dev/null || true
ln -s usr/lib "$stage/lib"
depmod -b "$stage" "$K_VER"
rm "$stage/lib"

ln -s usr/lib/systemd/systemd "$stage/init"
cpio_dir "$stage" "$out/overlay.cpio"
cat "$base" "$out/overlay.cpio" >"$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
rm -rf "$stage" "$out/overlay.cpio"
cp "$K_IMAGE" "$out/vmlinuz"

cat >"$out/guest.json" <<EOF
{
  "arch": "$A_ARCH",
  "flavour": "systemd",
  "uname": "$A_UNAME",
  "qemu": "$A_QEMU",
  "args": $(json_array $A_QEMU_ARGS -m 1024),
  "kernel": "$out/vmlinuz",
  "initrd": "$out/initrd.img",
  "append": "console=$A_CONSOLE panic=-1 loglevel=4 net.ifnames=0",
  "kernel_version": "$K_VER"
}
EOF
log "$A_ARCH: systemd guest ready: $out ($(du -h "$out/initrd.img" | cut -f1) initrd)"
