#!/usr/bin/env bash
# Builds tether's container image from prebuilt files, with no base image to
# pull: the build context holds one rootfs.tar (tether from `make
# cross-one`, a static busybox from Debian's busybox-static, the CA bundle,
# passwd/group/shells) that the Containerfile ADDs to scratch.
#
#   container.sh context PLATFORM DIR   lay out the build context in DIR
#   container.sh build PLATFORM TAG     the context, then the image (podman
#                                       or docker buildx, see ENGINE)
#
# PLATFORM is a `make cross` platform (linux/arm64, linux/arm/v7, ...).
# Environment:
#   DIST        where cross-one put the binaries (default dist): $DIST/linux-arm64/tether
#   BUSYBOX     a static busybox for PLATFORM, instead of Debian's package
#   SOURCE_DATE_EPOCH  every timestamp in the image (default: the last commit)
#   VERSION, COMMIT    image labels (default: from git)
#   ENGINE      podman (default) or docker; PODMAN is the podman command
#               with its global options (default: podman)
#   FORMAT      podman's image format: oci (default; the same inputs give
#               the same image id) or docker (keeps the HEALTHCHECK)
#   WORK        scratch space (default build/container)
#   DEBS        where Debian packages are downloaded once (default build/container/deb)
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${DIST:-dist}
WORK=${WORK:-build/container}
DEBS=${DEBS:-build/container/deb}
ENGINE=${ENGINE:-podman}
FORMAT=${FORMAT:-oci}
PODMAN=${PODMAN:-podman}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
export SOURCE_DATE_EPOCH

die() { echo "container: $*" >&2; exit 1; }

# The dist directory (as mk/cross.mk names it) and the Debian architecture
# of a platform. Debian 12 has no riscv64; BUSYBOX= serves there.
platform_dir() {
  case $1 in
    linux/arm/v*) echo "linux-armv${1##*/v}" ;;
    linux/*/*) die "unknown platform $1" ;;
    linux/*) echo "linux-${1#linux/}" ;;
    *) die "unknown platform $1" ;;
  esac
}
debian_arch() {
  case $1 in
    linux/amd64) echo amd64 ;;
    linux/386) echo i386 ;;
    linux/arm64) echo arm64 ;;
    linux/arm/v7) echo armhf ;;
    linux/arm/v6) echo armel ;; # ARMv5TE code, runs on ARMv6
    linux/mipsle) echo mipsel ;;
    *) echo "" ;;
  esac
}

# fetch_busybox ARCH: the path of busybox from Debian's busybox-static for
# ARCH, downloaded once into $DEBS. Another architecture than the
# host's is looked up with a private apt state under $DEBS/apt (the
# system's sources, that architecture only), so the host's dpkg
# configuration stays as it is.
fetch_busybox() {
  local arch=$1 dir="$DEBS/$1"
  if [ ! -x "$dir/root/bin/busybox" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    local apt=(apt-get -qq -o APT::Sandbox::User=root)
    if [ "$arch" != "$(dpkg --print-architecture)" ]; then
      local state; state=$(realpath -m "$DEBS/apt/$arch")
      mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
      apt+=(-o APT::Architecture="$arch" -o APT::Architectures::="$arch"
        -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache"
        -o Dir::State::status=/dev/null)
      "${apt[@]}" update || die "apt-get update for $arch failed"
    fi
    # Lists may be missing or stale on a machine that was set up long ago.
    (cd "$dir" && "${apt[@]}" download "busybox-static:$arch") ||
      { [ "$(id -u)" -eq 0 ] && "${apt[@]}" update && (cd "$dir" && "${apt[@]}" download "busybox-static:$arch"); } ||
      die "cannot download busybox-static:$arch (run apt-get update, or pass BUSYBOX=)"
    dpkg-deb -x "$dir"/busybox-static_*.deb "$dir/root"
  fi
  echo "$dir/root/bin/busybox"
}

# applets BUSYBOX: the applet paths (bin/sh, usr/bin/id, ...). A foreign
# busybox cannot run here; Debian builds busybox-static with one
# configuration for every architecture, so the host's lists the same.
applets() {
  if "$1" true 2>/dev/null; then
    "$1" --list-full
  else
    "$(fetch_busybox "$(dpkg --print-architecture)")" --list-full
  fi
}

cmd_context() {
  local platform=$1 ctx=$2 dir arch busybox
  dir=$(platform_dir "$platform")
  [ -x "$DIST/$dir/tether" ] || die "no $DIST/$dir/tether: run make cross-one for $platform first"
  arch=$(debian_arch "$platform")
  if [ -n "${BUSYBOX:-}" ]; then
    busybox=$BUSYBOX
  elif [ -n "$arch" ]; then
    busybox=$(fetch_busybox "$arch")
  else
    die "Debian 12 has no busybox-static for $platform: pass BUSYBOX=/path/to/static/busybox"
  fi
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -s "$ca" ] || die "no $ca (install ca-certificates)"

  local root="$ctx/rootfs"
  rm -rf "$ctx" && mkdir -p "$root"
  (cd "$root" && mkdir -p bin sbin usr/bin usr/sbin etc/ssl/certs etc/tether root home/tether tmp run var/lib/tether)
  install -m 0755 "$DIST/$dir/tether" "$root/usr/bin/tether"
  install -m 0755 "$busybox" "$root/bin/busybox"
  local a
  for a in $(applets "$busybox"); do
    case $a in bin/busybox | linuxrc) continue ;; esac
    [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
  done
  install -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
  # The shells run as tether (1000), not root; nobody for whoever wants it.
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
tether:x:1000:1000:tether shell user:/home/tether:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
tether:x:1000:
nogroup:x:65534:
EOF
  printf '/bin/sh\n/bin/ash\n/usr/bin/host-shell\n' >"$root/etc/shells"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  cat >"$root/etc/profile" <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PS1='\u@\h:\w\$ '
EOF
  # The shell of the host, for an image run with --pid=host --privileged
  # and TETHER_USER=root (docs/building.md: "Reaching the host").
  cat >"$root/usr/bin/host-shell" <<'EOF'
#!/bin/sh
# host-shell [--target PID] [--login] [ARG...]: the host's own /bin/sh in
# the namespaces of the host's PID 1 (or of PID). Run the container with
# --pid=host --privileged and TETHER_USER=root. The host's sh may be
# dash, which knows -l but not --login.
target=1
if [ "${1:-}" = --target ]; then target=$2; shift 2; fi
if [ "${1:-}" = --login ]; then shift; set -- -l "$@"; fi
exec /usr/bin/nsenter -t "$target" -m -u -i -n -p -- /bin/sh "$@"
EOF
  chmod 0644 "$root"/etc/passwd "$root"/etc/group "$root"/etc/shells "$root"/etc/nsswitch.conf "$root"/etc/profile
  chmod 0755 "$root/usr/bin/host-shell"
  chmod 0700 "$root/root"
  chmod 1777 "$root/tmp"
  find "$root" -type d ! -path "$root/tmp" ! -path "$root/root" -exec chmod 0755 {} +

  # One deterministic tar: sorted, one mtime, numeric owners, and the
  # home directory owned by its user (ADD keeps a tar's owners; COPY
  # would make everything root's).
  local tar=(tar --format=ustar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner -C "$root")
  "${tar[@]}" --owner=0 --group=0 --exclude=./home/tether -cf "$ctx/rootfs.tar" .
  "${tar[@]}" --owner=1000 --group=1000 -rf "$ctx/rootfs.tar" ./home/tether
  rm -rf "$root"
  cp Containerfile "$ctx/Containerfile"
  echo "container: context for $platform in $ctx ($(du -h "$ctx/rootfs.tar" | cut -f1) rootfs.tar)" >&2
}

cmd_build() {
  local platform=$1 tag=$2 ctx
  ctx="$WORK/ctx/$(platform_dir "$platform")"
  cmd_context "$platform" "$ctx"
  local args=(--platform "$platform" --build-arg "VERSION=$VERSION" --build-arg "COMMIT=$COMMIT"
    -f "$ctx/Containerfile" -t "$tag")
  case $ENGINE in
    podman)
      # --timestamp sets the image's dates and every file's mtime. The
      # Docker format keeps the HEALTHCHECK (OCI configs have none) but
      # carries the build container's random id and hostname: only the
      # layer is then the same from build to build.
      # shellcheck disable=SC2086 # PODMAN is a command with options
      $PODMAN build --format "$FORMAT" --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false \
        --layers=false --pull=never "${args[@]}" "$ctx" ;;
    docker)
      # BuildKit takes its dates from the SOURCE_DATE_EPOCH build arg;
      # rewrite-timestamp sets the files' mtimes to it too.
      docker buildx build "${args[@]}" --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" --output "type=docker,rewrite-timestamp=true" "$ctx" ;;
    *) die "ENGINE=$ENGINE: want podman or docker" ;;
  esac
}

case ${1:-} in
  context) [ $# -eq 3 ] || die "usage: $0 context PLATFORM DIR"; cmd_context "$2" "$3" ;;
  build) [ $# -eq 3 ] || die "usage: $0 build PLATFORM TAG"; cmd_build "$2" "$3" ;;
  *) die "usage: $0 context PLATFORM DIR | build PLATFORM TAG" ;;
esac
