#!/usr/bin/env bash
# Makes the local Docker image the .deb test installs into: a real Debian
# bookworm (debootstrap --variant=minbase, plus systemd so that the test can
# also boot it and run the service under systemd), since this machine's
# engine has no registry to pull one from.
#
#   bash scripts/debian-image.sh [IMAGE]     (default backhaul-test/debian:bookworm)
#
# The root filesystem is made once and kept as a tarball under
# ~/.cache/backhaul; the image is imported from it only when the engine lacks
# it. Needs root (debootstrap), the `debootstrap` package and a Debian mirror:
# the one apt uses here.
set -euo pipefail
image="${1:-backhaul-test/debian:bookworm}"
cache="${BACKHAUL_CACHE:-$HOME/.cache/backhaul}"
tarball="$cache/debian-bookworm-systemd.tar"
export PATH="$PATH:/usr/sbin:/sbin"

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null 2>&1 || {
    echo "debian-image.sh: debootstrap missing (apt-get install debootstrap)" >&2
    exit 2
  }
  # The mirror apt already uses (deb822 or one-line sources), else Debian's.
  mirror=$(grep -hvE '^[[:space:]]*#' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -oE 'https?://[^ ]*/debian/?' | grep -v -- '-security' | head -n 1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  echo "debian-image.sh: debootstrap bookworm from $mirror (once; cached in $tarball)"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
    echo "debian-image.sh: debootstrap failed; see $cache/debootstrap.log" >&2
    exit 1
  }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
docker import "$tarball" "$image" >/dev/null
echo "debian-image.sh: imported $image from $tarball"
