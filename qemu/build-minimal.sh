#!/usr/bin/env bash
# build-minimal.sh ARCH: the minimal HIL guest of one architecture.
#
# A Debian kernel and an initramfs holding busybox-static (as /init's
# shell and userland), Debian's dbus-daemon with its library closure and
# system bus configuration, the mock-authd DBus policy, and static tether
# and mock-authd builds of this tree. Output in build/hil/ARCH/minimal:
# vmlinuz, initrd.img (uncompressed cpio) and guest.json for the tests.
#
# Packages are downloaded once per version (build/hil/debs/ARCH); the
# initramfs itself takes seconds and is rebuilt every time, so it always
# holds the current tether.
source "$(dirname "$0")/common.sh"

[ $# -eq 1 ] || die "usage: $0 ARCH"
arch_vars "$1"
apt_update
kernel_prepare

out=$HIL_BUILD/$A_ARCH/minimal
stage=$out/root
rm -rf "$stage" && mkdir -p "$stage"

log "$A_ARCH: minimal guest: packages"
# dbus-daemon and everything it links against; dbus-system-bus-common
# brings Debian's system.conf.
mapfile -t pkgs < <(closure dbus-daemon dbus-system-bus-common busybox-static)
mapfile -t debs < <(fetch_debs "${pkgs[@]}")
for d in "${debs[@]}"; do
  dpkg-deb -x "$d" "$stage"
done
# Keep binaries, libraries and configuration; drop what a boot never reads.
rm -rf "$stage"/usr/share/doc "$stage"/usr/share/man "$stage"/usr/share/locale \
  "$stage"/usr/share/lintian "$stage"/usr/share/info "$stage"/usr/lib/"$A_TRIPLET"/gconv \
  "$stage"/usr/share/bug "$stage"/usr/share/common-licenses
[ -x "$stage/bin/busybox" ] || die "$A_ARCH: busybox-static did not unpack to /bin/busybox"
[ -e "$stage$A_LDSO" ] || die "$A_ARCH: no dynamic loader at $A_LDSO"

log "$A_ARCH: minimal guest: kernel modules"
mapfile -t mods < <(kernel_modules $HIL_MODULES)
mkdir -p "$stage/etc/hil"
: >"$stage/etc/hil/modules"
for m in "${mods[@]}"; do
  install -D -m 0644 "$K_ROOT/lib/modules/$K_VER/$m" "$stage/lib/modules/$K_VER/$m"
  echo "$m" >>"$stage/etc/hil/modules"
done

log "$A_ARCH: minimal guest: tether and mock-authd ($A_GOARCH${A_GOARM:+ v$A_GOARM})"
mkdir -p "$stage/usr/bin"
go_build ./cmd/tether "$stage/usr/bin/tether"
go_build ./cmd/mock-authd "$stage/usr/bin/mock-authd"

# The system a package manager would leave: accounts, shells, machine id,
# the DBus policy where the package puts it, tether's configuration.
sed "s|@TRIPLET@|$A_TRIPLET|g" "$HIL_QEMU_DIR/minimal/init" >"$stage/init"
chmod 0755 "$stage/init"
mkdir -p "$stage/etc/tether" "$stage/root" "$stage/var" "$stage/usr/share/dbus-1/system.d"
ln -sfn /run "$stage/var/run"
install -m 0644 "$HIL_QEMU_DIR/minimal/tether.conf" "$stage/etc/tether/tether.conf"
install -m 0644 "$HIL_REPO/cmd/mock-authd/io.mender.AuthenticationManager.conf" \
  "$stage/usr/share/dbus-1/system.d/io.mender.AuthenticationManager.conf"
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
messagebus:x:100:101::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$stage/etc/group" <<'EOF'
root:x:0:
tty:x:5:
messagebus:x:101:
nogroup:x:65534:
EOF
printf '/bin/sh\n/bin/ash\n' >"$stage/etc/shells"
echo 0123456789abcdef0123456789abcdef >"$stage/etc/machine-id"

cpio_dir "$stage" "$out/initrd.img"
cp "$K_IMAGE" "$out/vmlinuz"
rm -rf "$stage"

cat >"$out/guest.json" <<EOF
{
  "arch": "$A_ARCH",
  "flavour": "minimal",
  "uname": "$A_UNAME",
  "qemu": "$A_QEMU",
  "args": $(json_array $A_QEMU_ARGS -m 512),
  "kernel": "$out/vmlinuz",
  "initrd": "$out/initrd.img",
  "append": "console=$A_CONSOLE panic=-1 loglevel=4",
  "kernel_version": "$K_VER"
}
EOF
log "$A_ARCH: minimal guest ready: $out ($(du -h "$out/initrd.img" | cut -f1) initrd)"
