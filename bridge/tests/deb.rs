//! The `.deb` (cargo-deb, `[package.metadata.deb]` in bridge/Cargo.toml),
//! built from the binary `cargo test` already built, installed with dpkg
//! into a real Debian bookworm in a container (`scripts/debian-image.sh`
//! makes that image with debootstrap), then run as its service user,
//! removed and purged.

mod docker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use docker::{require_engine, require_image, Container};

const DEBIAN: &str = "backhaul-test/debian:bookworm";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// cargo-deb from the test tools cache, else from PATH.
fn cargo_deb() -> PathBuf {
    let cache = std::env::var_os("BACKHAUL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/backhaul")));
    if let Some(tool) = cache.map(|c| c.join("tools/bin/cargo-deb")) {
        if tool.exists() {
            return tool;
        }
    }
    PathBuf::from("cargo-deb")
}

/// The package of the debug binary beside this test, made once for the
/// tests here (cargo-deb stages its files under the target directory, so
/// two runs at once would mix them). No release build: cargo-deb 3.8 warns
/// that the dev profile is not meant for releases, and packages it anyway.
fn build_deb() -> PathBuf {
    static DEB: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut deb = DEB.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(deb) = deb.as_ref() {
        return deb.clone();
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_backhaul"));
    // target/debug/backhaul: the target directory holding it.
    let target_dir = binary.parent().and_then(Path::parent).unwrap();
    let out = target_dir.join("deb-test");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let result = Command::new(cargo_deb())
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "-p",
            "backhaul-bridge",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            // No separate debug-symbols package for a test build: strip.
            "--no-dbgsym",
            "--strip",
        ])
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cargo-deb cannot run ({err}): cargo install cargo-deb --version 3.8.0 --locked \
                 --root ~/.cache/backhaul/tools (scripts/test.sh does)"
            )
        });
    assert!(
        result.status.success(),
        "cargo-deb failed: {}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    *deb = debs.into_iter().next();
    deb.clone().unwrap()
}

#[test]
fn dpkg_installs_runs_removes_and_purges_the_package_in_debian_bookworm() {
    require_engine();
    require_image(DEBIAN, "bash scripts/debian-image.sh");
    let deb = build_deb();

    // --init: a PID 1 that reaps the appliance started below.
    let debian = Container::run(
        "backhaul-deb-test",
        &["--init", DEBIAN, "sleep", "infinity"],
    );
    debian.copy_in(&deb, "/tmp/backhaul.deb");
    let (code, stdout, stderr) = debian.exec(&["dpkg", "-i", "/tmp/backhaul.deb"]);
    assert_eq!(code, 0, "dpkg -i: {stdout}{stderr}");

    // What dpkg knows: the files, the conffiles, the dependencies.
    let files = debian.sh("dpkg -L backhaul | sort");
    for path in [
        "/usr/bin/backhaul",
        "/lib/systemd/system/backhaul.service",
        "/etc/backhaul/appliance.yaml",
        "/etc/backhaul/dataflows.yaml",
        "/usr/share/backhaul/grafana/backhaul.json",
    ] {
        assert!(
            files.lines().any(|l| l == path),
            "{path} in dpkg -L:\n{files}"
        );
    }
    let conffiles: Vec<String> = debian
        .sh("dpkg-query -W -f='${Conffiles}' backhaul")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(
        conffiles,
        [
            "/etc/backhaul/appliance.yaml",
            "/etc/backhaul/dataflows.yaml"
        ]
    );
    assert_eq!(
        debian.sh("dpkg-query -W -f='${Depends}' backhaul"),
        "libc6 (>= 2.35), libgcc-s1, libssl3, passwd"
    );

    // No systemd runs here (as in an image build): enabled, not started.
    assert_eq!(debian.sh("systemctl is-enabled backhaul"), "enabled\n");
    assert_eq!(
        debian
            .exec(&["backhaul", "healthcheck", "--config", "/etc/backhaul"])
            .0,
        1,
        "nothing started the service"
    );

    // The shipped files are the repository's.
    assert_eq!(
        debian.sh("cat /lib/systemd/system/backhaul.service"),
        std::fs::read_to_string(repo().join("packaging/systemd/backhaul.service")).unwrap()
    );
    assert_eq!(
        debian.sh("cat /etc/backhaul/appliance.yaml"),
        std::fs::read_to_string(repo().join("packaging/deb/appliance.yaml")).unwrap()
    );

    // The system user, and who owns what.
    let passwd = debian.sh("getent passwd backhaul");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(
        (fields[0], fields[5], fields[6]),
        ("backhaul", "/var/lib/backhaul", "/usr/sbin/nologin")
    );
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "a system uid: {uid}");
    assert_eq!(
        debian.sh(
            "stat -c '%n %U:%G %a' /usr/bin/backhaul /etc/backhaul /etc/backhaul/appliance.yaml \
             /etc/backhaul/dataflows.yaml /var/lib/backhaul /lib/systemd/system/backhaul.service"
        ),
        "/usr/bin/backhaul root:root 755\n\
         /etc/backhaul root:backhaul 750\n\
         /etc/backhaul/appliance.yaml root:backhaul 640\n\
         /etc/backhaul/dataflows.yaml root:backhaul 640\n\
         /var/lib/backhaul backhaul:backhaul 750\n\
         /lib/systemd/system/backhaul.service root:root 644\n"
    );

    // The shipped configuration is valid, read as the service user.
    let (code, stdout, stderr) = debian.exec(&[
        "setpriv",
        "--reuid=backhaul",
        "--regid=backhaul",
        "--init-groups",
        "backhaul",
        "validate",
        "--config",
        "/etc/backhaul",
    ]);
    assert_eq!(
        (code, stdout.trim(), stderr.as_str()),
        (
            0,
            "configuration is valid: 1 data flow(s), 1 enabled, 2 endpoint(s)",
            ""
        )
    );

    // The service's command line, as the service user: it gets ready and
    // writes its queues where the unit allows it to write.
    debian.sh(
        "setpriv --reuid=backhaul --regid=backhaul --init-groups /usr/bin/backhaul run \
         --config /etc/backhaul --data-dir /var/lib/backhaul >/tmp/backhaul.log 2>&1 & \
         echo $! >/tmp/backhaul.pid",
    );
    let mut ready = (1, String::new(), String::new());
    for _ in 0..300 {
        ready = debian.exec(&["backhaul", "healthcheck", "--config", "/etc/backhaul"]);
        if ready.0 == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        ready.0,
        0,
        "backhaul healthcheck: {}{}; log:\n{}",
        ready.1,
        ready.2,
        debian.sh("cat /tmp/backhaul.log")
    );
    assert_eq!(
        debian.sh("stat -c '%U:%G' /var/lib/backhaul/queues"),
        "backhaul:backhaul\n"
    );
    debian.sh("pid=$(cat /tmp/backhaul.pid); kill -TERM $pid; \
         while kill -0 $pid 2>/dev/null; do sleep 0.1; done");
    assert!(
        debian.sh("cat /tmp/backhaul.log").contains("shutting down"),
        "SIGTERM stops it cleanly"
    );

    // Removal keeps the configuration; purge removes it and the data.
    let (code, stdout, stderr) = debian.exec(&["dpkg", "-r", "backhaul"]);
    assert_eq!(code, 0, "dpkg -r: {stdout}{stderr}");
    assert_eq!(
        debian.sh(
            "for p in /usr/bin/backhaul /lib/systemd/system/backhaul.service \
             /etc/backhaul/appliance.yaml /var/lib/backhaul; do \
             [ -e $p ] && echo \"$p present\" || echo \"$p absent\"; done"
        ),
        "/usr/bin/backhaul absent\n\
         /lib/systemd/system/backhaul.service absent\n\
         /etc/backhaul/appliance.yaml present\n\
         /var/lib/backhaul present\n"
    );
    let (code, stdout, stderr) = debian.exec(&["dpkg", "-P", "backhaul"]);
    assert_eq!(code, 0, "dpkg -P: {stdout}{stderr}");
    assert_eq!(
        debian.sh("for p in /etc/backhaul /var/lib/backhaul; do \
             [ -e $p ] && echo \"$p present\" || echo \"$p absent\"; done; \
             getent passwd backhaul | cut -d: -f1"),
        "/etc/backhaul absent\n/var/lib/backhaul absent\nbackhaul\n"
    );
}

/// `systemctl show backhaul -p <property> --value`.
fn property(container: &Container, name: &str) -> String {
    container
        .sh(&format!("systemctl show backhaul -p {name} --value"))
        .trim()
        .to_string()
}

/// Polls `systemctl show` until `name` has `value` (bounded: 60 s).
fn wait_property(container: &Container, name: &str, value: &str) {
    let mut seen = String::new();
    for _ in 0..600 {
        seen = property(container, name);
        if seen == value {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{name} is '{seen}', expected '{value}'; journal:\n{}",
        container.sh("journalctl -u backhaul --no-pager | tail -n 40")
    );
}

#[test]
fn under_systemd_the_package_starts_a_ready_service_that_the_watchdog_restarts() {
    require_engine();
    require_image(DEBIAN, "bash scripts/debian-image.sh");
    let deb = build_deb();

    // The image booted: systemd as PID 1 (no privileges needed; namespaces
    // the engine does not allow are skipped by systemd, and it says so).
    let booted = Container::run(
        "backhaul-systemd-test",
        &[
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            DEBIAN,
            "/sbin/init",
        ],
    );
    let mut state = String::new();
    for _ in 0..600 {
        state = booted
            .exec(&["systemctl", "is-system-running"])
            .1
            .trim()
            .to_string();
        if state == "running" || state == "degraded" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        state == "running" || state == "degraded",
        "systemd did not finish booting: {state}"
    );

    // postinst enables and starts the service; `systemctl start` of a
    // Type=notify unit returns once READY=1 arrived, so it is active now.
    booted.copy_in(&deb, "/tmp/backhaul.deb");
    let (code, stdout, stderr) = booted.exec(&["dpkg", "-i", "/tmp/backhaul.deb"]);
    assert_eq!(code, 0, "dpkg -i: {stdout}{stderr}");
    assert_eq!(booted.sh("systemctl is-enabled backhaul"), "enabled\n");
    assert_eq!(property(&booted, "ActiveState"), "active");
    assert_eq!(property(&booted, "SubState"), "running");
    assert_eq!(
        property(&booted, "StatusText"),
        "ready: 1 flow(s), 0 message(s) queued"
    );
    assert_eq!(property(&booted, "WatchdogUSec"), "30s");
    let pid = property(&booted, "MainPID");
    assert_eq!(
        booted.sh(&format!("stat -c %U /proc/{pid}")),
        "backhaul\n",
        "the service runs as its user"
    );
    assert_eq!(
        booted.exec(&["backhaul", "healthcheck", "--config", "/etc/backhaul"]),
        (0, String::new(), String::new())
    );

    // An upgrade (the same package again) keeps the operator's edit of a
    // conffile and restarts the service on the new binary.
    booted.sh(
        "sed -i 's/address: 127.0.0.1:1883/address: 127.0.0.1:1884/' /etc/backhaul/appliance.yaml",
    );
    let (code, stdout, stderr) = booted.exec(&["dpkg", "-i", "/tmp/backhaul.deb"]);
    assert_eq!(code, 0, "dpkg -i again: {stdout}{stderr}");
    assert_eq!(
        booted.sh("grep -c 'address: 127.0.0.1:1884' /etc/backhaul/appliance.yaml"),
        "1\n"
    );
    assert_eq!(property(&booted, "ActiveState"), "active");
    assert_ne!(
        property(&booted, "MainPID"),
        pid,
        "restarted by the upgrade"
    );

    // A hang: the process frozen, the watchdog (shortened to 2 s by a
    // drop-in) misses its pings, systemd aborts and restarts the service.
    booted.sh(
        "mkdir -p /etc/systemd/system/backhaul.service.d && \
         printf '[Service]\\nWatchdogSec=2s\\n' >/etc/systemd/system/backhaul.service.d/test.conf && \
         systemctl daemon-reload && systemctl restart backhaul",
    );
    assert_eq!(property(&booted, "WatchdogUSec"), "2s");
    let before = property(&booted, "MainPID");
    booted.sh("systemctl kill --signal=SIGSTOP backhaul");
    wait_property(&booted, "NRestarts", "1");
    wait_property(&booted, "ActiveState", "active");
    assert_ne!(property(&booted, "MainPID"), before, "a new process");
    let journal = booted.sh("journalctl -u backhaul --no-pager");
    assert!(
        journal.contains("Watchdog timeout (limit 2s)!"),
        "systemd names the watchdog:\n{journal}"
    );

    // A clean stop: STOPPING=1, exit 0, no restart.
    booted.sh("systemctl stop backhaul");
    assert_eq!(property(&booted, "ActiveState"), "inactive");
    assert_eq!(property(&booted, "Result"), "success");
    assert_eq!(property(&booted, "NRestarts"), "1");

    // An upgrade over a broken configuration: the package still installs
    // (postinst says where to look), the service fails with status 2 and is
    // not restarted in a loop.
    booted.sh("systemctl start backhaul");
    booted.sh("printf 'kind: Dataflow\n' >/etc/backhaul/broken.yaml");
    let (code, _, stderr) = booted.exec(&["dpkg", "-i", "/tmp/backhaul.deb"]);
    assert_eq!(code, 0, "dpkg -i over a broken configuration: {stderr}");
    assert!(
        stderr.contains("backhaul: the service did not start; see: journalctl -u backhaul"),
        "{stderr}"
    );
    assert_eq!(
        booted.sh("dpkg-query -W -f='${Status}' backhaul"),
        "install ok installed"
    );
    wait_property(&booted, "ActiveState", "failed");
    assert_eq!(property(&booted, "ExecMainStatus"), "2");
    // (NRestarts counts from the last manual start.)
    assert_eq!(property(&booted, "NRestarts"), "0", "no restart loop");
}
