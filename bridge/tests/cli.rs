//! The `backhaul` command line: exit codes and messages users see.

use std::process::Command;

fn backhaul(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backhaul"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run backhaul");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_built_in_configuration() {
    let (code, stdout, _) = backhaul(&["validate"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "configuration is valid: 1 data flow(s), 1 enabled, 2 endpoint(s)"
    );
}

#[test]
fn validate_prints_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flows.yaml"),
        "apiVersion: connectivity.iotoperations.azure.com/v1\nkind: Dataflow\n\
         metadata: {name: f}\nspec:\n  profileRef: default\n  operations: []\n",
    )
    .unwrap();
    let (code, stdout, stderr) = backhaul(&["validate", "--config", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    let file = dir.path().join("flows.yaml").display().to_string();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!("{file}: document 1 (Dataflow 'f'): spec.operations: a Source operation is required"),
            format!("{file}: document 1 (Dataflow 'f'): spec.operations: a Destination operation is required"),
        ]
    );
}

#[test]
fn run_refuses_a_bad_configuration_before_starting() {
    let (code, _, stderr) = backhaul(&["run", "--config", "/nonexistent/backhaul"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        "/nonexistent/backhaul: cannot read the configuration directory: No such file or directory (os error 2)"
    );
}

#[test]
fn help_explains_the_commands() {
    let (code, stdout, _) = backhaul(&["--help"]);
    assert_eq!(code, 0);
    for expected in ["run", "validate", "--config", "Azure IoT Operations"] {
        assert!(
            stdout.contains(expected),
            "--help mentions {expected}:\n{stdout}"
        );
    }
}

#[test]
fn healthcheck_fails_with_the_address_when_nothing_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let (code, _, stderr) = backhaul(&["healthcheck", "--address", &address.to_string()]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(&format!("backhaul: not ready: connecting to {address}: ")),
        "{stderr}"
    );
}
