//! Eclipse Paho's MQTT 5 interoperability tests against the appliance.
//!
//! The suite is `tests/test_mqttv5.py` of the paho-mqtt 2.2.0 source
//! distribution on PyPI, installed with the paho-mqtt client into
//! `~/.cache/backhaul/paho` by `scripts/paho-suite.sh` (the test command
//! runs it). `conformance/paho_runner.py` starts `backhaul run` on the
//! configuration written here (disk storage, the built-in `factory/#` flow),
//! points the suite at it, restarts it where a test reboots the broker, and
//! reports each test's outcome. This test prints them and requires exactly
//! the outcomes listed in [`EXPECTED`], which the README's "MQTT protocol
//! behaviour" section explains one by one: a test that starts passing or
//! failing makes it fail until both are updated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_chaos_tests::config::{appliance_yaml, write_local_files, TestAppliance};
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::process::backhaul_bin;

/// Each test of the suite and its outcome against Backhaul (why a test
/// fails: README, "MQTT protocol behaviour").
const EXPECTED: &[(&str, &str)] = &[
    ("Test.test_basic", "pass"),
    ("Test.test_client_topic_alias", "pass"),
    ("Test.test_connect_fail", "pass"),
    ("Test.test_maximum_packet_size", "pass"),
    ("Test.test_message_expiry", "pass"),
    ("Test.test_offline_message_queueing", "pass"),
    ("Test.test_overlapping_subscriptions", "pass"),
    ("Test.test_payload_format", "pass"),
    ("Test.test_request_response", "pass"),
    ("Test.test_retained_message", "pass"),
    ("Test.test_server_topic_alias", "pass"),
    ("Test.test_session_expiry", "pass"),
    ("Test.test_shared_subscriptions", "pass"),
    ("Test.test_subscribe_failure", "fail"),
    ("Test.test_subscribe_options", "error"),
    ("Test.test_subscription_identifiers", "fail"),
    ("Test.test_unsubscribe", "pass"),
    ("Test.test_user_properties", "pass"),
    ("Test.test_will_delay", "pass"),
    ("Test.test_will_message", "pass"),
    ("Test.test_zero_length_clientid", "pass"),
    (
        "TestBrokerRebootsTopicAliiQoS0.test_qos0_client_reconnects_after_broker_reboots",
        "pass",
    ),
    // The suite marks this one as an expected failure of the paho client.
    (
        "TestBrokerRebootsTopicAliiQoS1.test_qos1_client_reconnects_after_broker_reboots",
        "expected-failure",
    ),
    (
        "TestDropOutMessagesWorkAround.test_qos1_drop_messages_client_reconnects_after_broker_reboots",
        "pass",
    ),
];

/// The suite's test broker refuses subscriptions to `test/nosubscribe`
/// (test_subscribe_failure); everything else is allowed, as there.
const AUTHORIZATION: &str = "  authorization:
    default: Allow
    rules:
      - identity: '*'
        denySubscribe: ['test/nosubscribe']
";

/// Longest the whole suite may take. It takes about 1.5 minutes, but
/// test_will_delay waits for its will without a timeout
/// (`messages.get(DEFAULT_TIMEOUT)` passes the timeout as `block`), so a
/// broker that never publishes it would hang the test command.
const SUITE_TIMEOUT: Duration = Duration::from_secs(8 * 60);

/// Where scripts/paho-suite.sh installed the suite.
fn paho_dir() -> PathBuf {
    let dir = match std::env::var_os("BACKHAUL_CACHE") {
        Some(cache) => PathBuf::from(cache).join("paho"),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/backhaul/paho"),
    };
    assert!(
        dir.join("suite/test_mqttv5.py").exists() && dir.join("venv/bin/python").exists(),
        "the Paho interoperability suite is not installed in {}: run `bash scripts/paho-suite.sh` (scripts/test.sh does)",
        dir.display()
    );
    dir
}

#[test]
fn the_paho_mqtt_5_interoperability_suite_gives_the_documented_outcomes() {
    let paho = paho_dir();
    let started = Instant::now();
    let mut outcomes = run_suite(&paho, None);
    print_outcomes(&outcomes);
    let expected: BTreeMap<&str, &str> = EXPECTED.iter().copied().collect();
    // The suite waits 1 to 5 s for what it expects; on a loaded machine a
    // test can miss that. Tests whose outcome differs run once more, alone.
    let differing: Vec<String> = outcomes
        .iter()
        .filter(|(test, (outcome, _))| expected.get(test.as_str()) != Some(&outcome.as_str()))
        .map(|(test, _)| test.clone())
        .collect();
    if !differing.is_empty() && differing.len() < EXPECTED.len() {
        println!("running again: {}", differing.join(", "));
        let again = run_suite(&paho, Some(&differing.join(",")));
        print_outcomes(&again);
        outcomes.extend(again);
    }
    println!("whole suite: {:.0?}", started.elapsed());
    let actual: BTreeMap<&str, &str> = outcomes
        .iter()
        .map(|(test, (outcome, _))| (test.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(
        actual, expected,
        "outcomes differ from the documented ones (update EXPECTED and the README table together)"
    );
}

/// Runs the suite (or the tests named in `only`) against a new appliance.
fn run_suite(paho: &Path, only: Option<&str>) -> BTreeMap<String, (String, String)> {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config");
    let appliance = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Disk",
    };
    write_local_files(&config, &appliance);
    std::fs::write(
        config.join("appliance.yaml"),
        appliance_yaml(&appliance, AUTHORIZATION),
    )
    .unwrap();
    let results = work.path().join("results.json");
    let runner_log = work.path().join("runner.log");
    let runner = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/paho_runner.py");
    let mut command = Command::new(paho.join("venv/bin/python"));
    command
        .arg(runner)
        .env("PAHO_SUITE_DIR", paho.join("suite"))
        .env("BACKHAUL_BIN", backhaul_bin().unwrap())
        .env("BACKHAUL_CONFIG", &config)
        .env("BACKHAUL_DATA", work.path().join("data"))
        .env("BACKHAUL_LOG", work.path().join("backhaul.log"))
        .env("BACKHAUL_MQTT_PORT", appliance.mqtt_port.to_string())
        .env("BACKHAUL_METRICS_PORT", appliance.metrics_port.to_string())
        .env("PAHO_RESULTS", &results)
        .stdout(Stdio::from(std::fs::File::create(&runner_log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::options()
                .append(true)
                .open(&runner_log)
                .unwrap(),
        ));
    if let Some(only) = only {
        command.env("PAHO_ONLY", only);
    }
    let mut child = command.spawn().expect("run the Paho suite's runner");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            panic!(
                "the Paho suite ran longer than {SUITE_TIMEOUT:?}; its log:\n{}",
                log_tail(&runner_log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "the Paho suite's runner failed ({status}); its log:\n{}",
        log_tail(&runner_log)
    );
    read_outcomes(&results)
}

fn print_outcomes(outcomes: &BTreeMap<String, (String, String)>) {
    println!("Paho MQTT 5 interoperability suite against Backhaul:");
    for (test, (outcome, detail)) in outcomes {
        println!("  {test}: {outcome}  {detail}");
    }
}

/// Test name to (outcome, the failure's last line).
fn read_outcomes(path: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(path).expect("the runner wrote its results");
    let json: serde_json::Value = serde_json::from_str(&text).expect("results are JSON");
    json.as_object()
        .expect("a JSON object of tests")
        .iter()
        .map(|(test, result)| {
            let field = |name: &str| result[name].as_str().unwrap_or_default().to_owned();
            (test.clone(), (field("outcome"), field("detail")))
        })
        .collect()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
