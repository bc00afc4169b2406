#!/usr/bin/env bash
# Backhaul's whole test suite, on a fresh machine or a warm one:
#   1. installs what the tests need, only if missing: Mosquitto, libssl-dev,
#      pkg-config and openssl, systemd's systemd-analyze, debootstrap and
#      Prometheus from Debian, cargo-deb from crates.io
#      (into ~/.cache/backhaul/tools), the Debian image the .deb test
#      installs into (scripts/debian-image.sh), and Eclipse Paho's MQTT 5
#      interoperability suite from PyPI (scripts/paho-suite.sh);
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
# The packaging tests: systemd-analyze verifies the unit; debootstrap makes
# the Debian root filesystem the .deb is installed into.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# A real Prometheus evaluates every query of the Grafana dashboard.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The Paho interoperability suite runs in a Python venv.
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# cargo-deb builds the .deb (bridge/Cargo.toml [package.metadata.deb]); the
# test packages the debug binary, so no release build is needed.
tools="$cache/tools"
CARGO_DEB_VERSION=3.8.0
if ! "$tools/bin/cargo-deb" --version 2>/dev/null | grep -qxF "cargo-deb $CARGO_DEB_VERSION"; then
  echo "test.sh: installing cargo-deb into $tools"
  (unset CARGO_TARGET_DIR; cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --root "$tools" --quiet)
fi
export PATH="$tools/bin:$PATH"
# Eclipse Paho's MQTT 5 interoperability suite (from PyPI) into $cache/paho,
# for chaos-tests/tests/paho_conformance.rs.
bash scripts/paho-suite.sh
# Without a Docker engine this fails; the Docker tests then fail and say why.
bash scripts/debian-image.sh || echo "test.sh: no Debian image for the .deb test (see above)" >&2

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
