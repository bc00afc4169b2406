#!/usr/bin/env bash
# Builds Backhaul's OCI image FROM scratch with the local Docker engine.
#
#   bash packaging/build-image.sh [--binary PATH] [--tag NAME:TAG]
#
# Without --binary it builds the release binary first (cargo build --release).
# The image holds /usr/bin/backhaul (debug information stripped, symbols
# kept: backtraces still name functions), exactly the shared libraries `ldd`
# lists for it, /etc/ssl/certs/ca-certificates.crt, /etc/backhaul (the
# built-in data flow with packaging/image/config/appliance.yaml), a `backhaul`
# user (uid 10001) and the /var/lib/backhaul volume.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
binary=""
tag="backhaul:latest"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --release -p backhaul-bridge --bin backhaul)
  binary="${CARGO_TARGET_DIR:-$repo/target}/release/backhaul"
fi
[ -x "$binary" ] || { echo "build-image.sh: no executable at '$binary'" >&2; exit 2; }
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || { echo "build-image.sh: $ca_bundle missing (apt-get install ca-certificates)" >&2; exit 2; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/bin" "$rootfs/etc/ssl/certs" "$rootfs/etc/backhaul" "$rootfs/tmp" "$context/data"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/bin/backhaul"
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$rootfs/usr/bin/backhaul"
fi
# The dynamic loader and every library the binary links, at their own paths.
ldd "$binary" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp "$ca_bundle" "$rootfs/etc/ssl/certs/"
cp "$repo"/bridge/default-config/dataflows.yaml "$here"/image/config/appliance.yaml "$rootfs/etc/backhaul/"
printf 'root:x:0:0:root:/:/sbin/nologin\nbackhaul:x:10001:10001:Backhaul:/var/lib/backhaul:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nbackhaul:x:10001:\n' >"$rootfs/etc/group"
cp "$here/image/Dockerfile" "$context/Dockerfile"
docker build --quiet --tag "$tag" "$context" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$tag")
echo "built $tag ($((size / 1024 / 1024)) MiB) from $binary"
