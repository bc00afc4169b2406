#!/usr/bin/env bash
# Backhaul's whole test suite, on a fresh machine or a warm one:
#   1. installs what the tests need (Mosquitto from Debian), only if missing;
#   2. checks formatting and clippy;
#   3. runs every test of the workspace (units, integration, fault suites).
# Builds go to ~/.cache/backhaul/target so later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${BACKHAUL_CACHE:-$HOME/.cache/backhaul}"
mkdir -p "$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export PATH="$PATH:/usr/sbin:/sbin"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# openssl-sys (Entra ID client certificates) builds against libssl; the tests
# make PKCS#12 files with the openssl command.
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The storage crash test kills a child process this many times (the issue's
# bar for CI; a bare `cargo test` runs 20).
export BACKHAUL_CRASH_ITERATIONS="${BACKHAUL_CRASH_ITERATIONS:-200}"
echo "test.sh: cargo test"
cargo test --workspace
