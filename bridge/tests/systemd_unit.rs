//! The systemd unit (`packaging/systemd/backhaul.service`) checked by
//! systemd's own tools: `systemd-analyze verify` and `security`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bridge/ is in the repository")
        .to_path_buf()
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("packaging/systemd/backhaul.service")).unwrap()
}

/// `Key=` → its values in order, for one section of a unit file.
fn directives(unit: &str, section: &str) -> BTreeMap<String, Vec<String>> {
    let mut current = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else if current == section {
            let (key, value) = line.split_once('=').expect("Key=value");
            out.entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    out
}

/// A root directory holding the unit where the .deb installs it, the
/// binary it starts, and the host's own units it depends on (targets).
fn unit_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir("/lib/systemd/system").expect("systemd's units on this host") {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), units.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(units.join("backhaul.service"), unit_text()).unwrap();
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    let binary = root.path().join("usr/bin/backhaul");
    // A link where the file system allows it: the debug binary is large.
    if std::fs::hard_link(env!("CARGO_BIN_EXE_backhaul"), &binary).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_backhaul"), &binary).unwrap();
    }
    root
}

fn systemd_analyze(args: &[&str]) -> (i32, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("systemd-analyze cannot run ({err}): apt-get install systemd (scripts/test.sh does)")
        });
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn systemd_analyze_verifies_the_unit_without_a_warning() {
    let root = unit_root();
    let root_arg = format!("--root={}", root.path().display());
    let (code, output) = systemd_analyze(&["verify", &root_arg, "backhaul.service"]);
    // Unknown keys and bad values are warnings with exit code 0: the
    // output must be empty too.
    assert_eq!((code, output.as_str()), (0, ""));
}

#[test]
fn systemd_rates_the_unit_hardened() {
    let root = unit_root();
    let root_arg = format!("--root={}", root.path().display());
    // `--threshold=20`: fail above an overall exposure of 2.0 of 10 (systemd
    // calls up to 2.0 "OK"; a unit without hardening scores 9.6).
    let (code, output) = systemd_analyze(&[
        "security",
        "--offline=yes",
        &root_arg,
        "--threshold=20",
        "backhaul.service",
    ]);
    assert_eq!(code, 0, "{output}");
    let overall = output
        .lines()
        .find(|l| l.contains("Overall exposure level for backhaul.service"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{output}"));
    assert!(overall.contains(" OK"), "{overall}");
}

#[test]
fn the_unit_is_a_notify_service_with_a_watchdog_and_a_read_only_system() {
    let service = directives(&unit_text(), "Service");
    let one = |key: &str| -> &str {
        match service.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}= set once, found {other:?}"),
        }
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("WatchdogSec"), "30s");
    assert_eq!(one("Restart"), "on-failure");
    // main.rs exits 2 for an invalid configuration.
    assert_eq!(one("RestartPreventExitStatus"), "2");
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/backhaul run --config /etc/backhaul --data-dir /var/lib/backhaul"
    );
    assert_eq!((one("User"), one("Group")), ("backhaul", "backhaul"));
    assert_eq!(one("StateDirectory"), "backhaul");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ReadWritePaths"), "/var/lib/backhaul");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(one("SystemCallFilter"), "@system-service");
    assert_eq!(one("LimitNOFILE"), "65536");
    let install = directives(&unit_text(), "Install");
    assert_eq!(install["WantedBy"], ["multi-user.target"]);
}
