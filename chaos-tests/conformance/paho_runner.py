"""Runs Eclipse Paho's MQTT 5 interoperability tests against Backhaul.

The tests are tests/test_mqttv5.py of the paho-mqtt source distribution on
PyPI (scripts/paho-suite.sh installs it with the paho-mqtt client it drives;
nothing of it is in this repository). Its own setUpClass starts Paho's Python
test broker; here the broker is a Backhaul appliance, which this runner
starts, restarts where a test reboots the broker, and stops. Every test's
outcome is written as JSON for chaos-tests/tests/paho_conformance.rs.

Environment: PAHO_SUITE_DIR (holds test_mqttv5.py), BACKHAUL_BIN,
BACKHAUL_CONFIG, BACKHAUL_DATA, BACKHAUL_LOG, BACKHAUL_MQTT_PORT,
BACKHAUL_METRICS_PORT, PAHO_RESULTS (the JSON file to write), and
optionally PAHO_ONLY (comma-separated names such as Test.test_basic, to run
only those while investigating one).
"""

import json
import os
import subprocess
import sys
import time
import unittest
import urllib.request


class Appliance:
    """`backhaul run` on the test's configuration directory."""

    def __init__(self):
        self.command = [
            os.environ["BACKHAUL_BIN"], "run",
            "--config", os.environ["BACKHAUL_CONFIG"],
            "--data-dir", os.environ["BACKHAUL_DATA"],
        ]
        self.ready_url = f"http://127.0.0.1:{os.environ['BACKHAUL_METRICS_PORT']}/readyz"
        self.log = open(os.environ["BACKHAUL_LOG"], "ab")
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=self.log,
            env={**os.environ, "RUST_LOG": "info"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"backhaul exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("backhaul not ready after 30 s")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def reboot(self):
        self.stop()
        self.start()


def point_suite_at(suite, appliance, port):
    """Replaces the suite's start, stop and reboot of Paho's test broker by
    the appliance's; the client set-up is the suite's own."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def set_up_class(cls):
        cls._test_broker_port = port
        suite.setData()
        suite.cleanup(port)
        suite.callback = suite.Callbacks()
        suite.callback2 = suite.Callbacks()
        suite.aclient = mqtt.Client(CallbackAPIVersion.VERSION1, b"aclient", protocol=mqtt.MQTTv5)
        suite.callback.register(suite.aclient)
        suite.bclient = mqtt.Client(CallbackAPIVersion.VERSION1, b"bclient", protocol=mqtt.MQTTv5)
        suite.callback2.register(suite.bclient)

    suite._TestBase.setUpClass = classmethod(set_up_class)
    suite._TestBase.tearDownClass = classmethod(lambda cls: None)
    suite._TestBase._reboot_broker = classmethod(lambda cls: appliance.reboot())


class Outcomes(unittest.TestResult):
    """Each test's outcome and, for a failure, its last line.

    A test that fails or errors stops before its own cleanRetained, and the
    retained messages it leaves would arrive in later tests (which then fail
    for a reason that is not theirs); `clean` removes them after such a
    test, as the passing ones do themselves."""

    def __init__(self, clean=lambda: None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}
        self.clean = clean

    @staticmethod
    def name(test):
        return ".".join(test.id().split(".")[-2:])

    def record(self, test, outcome, err=None):
        detail = ""
        if err is not None:
            detail = self._exc_info_to_string(err, test).strip().splitlines()[-1]
        self.outcomes[self.name(test)] = {"outcome": outcome, "detail": detail}
        print(f"paho_runner: {self.name(test)}: {outcome} {detail}", file=sys.stderr, flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.record(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.record(test, "fail", err)
        self.clean()

    def addError(self, test, err):
        super().addError(test, err)
        self.record(test, "error", err)
        self.clean()

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[self.name(test)] = {"outcome": "skip", "detail": reason}

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.record(test, "expected-failure", err)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.record(test, "unexpected-success")


def main():
    sys.path.insert(0, os.environ["PAHO_SUITE_DIR"])
    import test_mqttv5 as suite

    appliance = Appliance()
    appliance.start()
    try:
        port = int(os.environ["BACKHAUL_MQTT_PORT"])
        point_suite_at(suite, appliance, port)
        only = os.environ.get("PAHO_ONLY")
        if only:
            tests = unittest.defaultTestLoader.loadTestsFromNames(only.split(","), suite)
        else:
            tests = unittest.defaultTestLoader.loadTestsFromModule(suite)
        result = Outcomes(clean=lambda: suite.cleanRetained(port))
        tests.run(result)
    finally:
        appliance.stop()
    with open(os.environ["PAHO_RESULTS"], "w") as out:
        json.dump(result.outcomes, out, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
