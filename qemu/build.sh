#!/usr/bin/env bash
# build.sh "ARCHES" "FLAVOURS": every guest image the HIL tests need, e.g.
#   qemu/build.sh "arm64 armhf amd64" "minimal systemd"
# The rootfs builds of the systemd flavour (minutes each when not cached,
# mostly maintainer scripts under qemu-user on one CPU each) run in
# parallel; everything else takes seconds.
source "$(dirname "$0")/common.sh"

[ $# -eq 2 ] || die "usage: $0 \"ARCHES\" \"FLAVOURS\""
read -r -a arches <<<"$1"
read -r -a flavours <<<"$2"
for a in "${arches[@]}"; do arch_vars "$a"; done
for f in "${flavours[@]}"; do
  [ -e "$HIL_QEMU_DIR/build-$f.sh" ] || die "unknown flavour '$f' (known: minimal systemd)"
done

t0=$(date +%s)
if [[ " ${flavours[*]} " == *" systemd "* ]]; then
  pids=()
  for a in "${arches[@]}"; do
    bash "$HIL_QEMU_DIR/build-systemd.sh" --rootfs-only "$a" &
    pids+=($!)
  done
  failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  [ $failed -eq 0 ] || die "a rootfs build failed (logs: $HIL_BUILD/cache/rootfs-ARCH.log)"
fi
for a in "${arches[@]}"; do
  for f in "${flavours[@]}"; do
    bash "$HIL_QEMU_DIR/build-$f.sh" "$a"
  done
done
log "guest images ready in $(($(date +%s) - t0)) s"
