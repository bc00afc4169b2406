#!/usr/bin/env bash
# Installs Eclipse Paho's MQTT 5 interoperability tests once, into
# ~/.cache/backhaul/paho (BACKHAUL_CACHE overrides the cache):
#   venv/   a Python venv with the paho-mqtt client the tests drive;
#   suite/  tests/test_mqttv5.py from the paho-mqtt source distribution on
#           PyPI (checked against its SHA-256), which is Paho's
#           interoperability suite (client_test5) ported to paho-mqtt 2.
# chaos-tests/tests/paho_conformance.rs runs it against the appliance through
# chaos-tests/conformance/paho_runner.py. Nothing of it is committed.
set -euo pipefail

cache="${BACKHAUL_CACHE:-$HOME/.cache/backhaul}"
dir="$cache/paho"
version=2.2.0
sdist_sha256=bcf706f03f1f49e0fc3ae166dc7b67ee35463496f8bdfd7c9c36181f6ba635c9

installed() {
  [ -f "$dir/suite/test_mqttv5.py" ] &&
    "$dir/venv/bin/python" -c "import paho.mqtt, sys; sys.exit(paho.mqtt.__version__ != '$version')" 2>/dev/null
}
if installed; then
  exit 0
fi

echo "paho-suite.sh: installing the Paho MQTT 5 interoperability suite (paho-mqtt $version) into $dir"
rm -rf "$dir"
mkdir -p "$dir/sdist" "$dir/suite"
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check "paho-mqtt==$version"
"$dir/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  "paho-mqtt==$version" -d "$dir/sdist"
archive="$dir/sdist/paho_mqtt-$version.tar.gz"
echo "$sdist_sha256  $archive" | sha256sum --check --quiet
tar -xzf "$archive" -C "$dir/sdist" "paho_mqtt-$version/tests/test_mqttv5.py"
cp "$dir/sdist/paho_mqtt-$version/tests/test_mqttv5.py" "$dir/suite/"
installed
