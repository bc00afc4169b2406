//! The appliance image (`packaging/build-image.sh`) run by the local Docker
//! engine: it becomes healthy through its own HEALTHCHECK, runs as uid
//! 10001, accepts a device's QoS 1 publish, keeps its data in the volume
//! across a new container, and ships a configuration `validate` accepts.

mod docker;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use backhaul_chaos_tests::process::http_get;
use docker::{docker, docker_output, engine_problem, require_engine, Container};

const TAG: &str = "backhaul-image-test:latest";
const FLOW: &str = "factory-to-files";

fn build_image() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("packaging/build-image.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_backhaul"), "--tag", TAG])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build-image.sh failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The figure the README quotes (for the debug binary here).
    print!("{stdout}");
}

/// Waits for Docker's verdict on the image's HEALTHCHECK (interval 10 s).
fn wait_healthy(container: &Container) {
    let mut status = String::new();
    for _ in 0..240 {
        status = container.inspect("{{.State.Health.Status}}");
        match status.as_str() {
            "healthy" => return,
            "unhealthy" => break,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    panic!(
        "container health: '{status}' after 2 minutes; log:\n{}",
        container.logs()
    );
}

/// A QoS 1 publish, as a device would; mosquitto_pub exits 0 only after
/// the PUBACK.
fn publish(port: u16, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-i", "image-test-device", "-q", "1"])
        .args(["-t", "factory/line1/temp", "-m", payload])
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(
        out.status.success(),
        "publish refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(port: u16, sample: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

fn wait_delivered(port: u16, count: f64) {
    let sample = format!("backhaul_flow_delivered_total{{flow=\"{FLOW}\"}}");
    let mut seen = None;
    for _ in 0..600 {
        seen = metric(port, &sample);
        if seen == Some(count) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{sample} is {seen:?}, expected {count}");
}

/// The files under `path` in the container, as `uid/gid path` lines of a
/// tar stream (`docker cp` keeps numeric owners), and their contents.
fn files_in(container: &Container, path: &str) -> (Vec<String>, String) {
    let tar = docker_output(&["cp", &format!("{}:{path}", container.name), "-"]);
    assert!(tar.status.success(), "docker cp {path}");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("files.tar");
    std::fs::write(&archive, &tar.stdout).unwrap();
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&archive)
        .output()
        .unwrap();
    let owners = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", fields[1], fields[5])
        })
        .collect();
    let extract = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(extract.success());
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                stack.push(entry);
            } else if entry.extension().is_some_and(|e| e == "jsonl") {
                files.push(entry);
            }
        }
    }
    // Output files are named by their first sequence: name order is queue order.
    files.sort();
    let lines = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    (owners, lines)
}

struct Volume(String);

/// The image under test, removed afterwards so that rebuilds leave no
/// dangling images behind.
struct Image;

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker_output(&["rmi", "-f", TAG]);
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker_output(&["volume", "rm", "-f", &self.0]);
    }
}

#[test]
fn the_image_runs_healthy_as_non_root_and_keeps_its_queue_in_the_volume() {
    require_engine();
    build_image();
    let _image = Image;
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Config.User}}", TAG]).trim(),
        "10001:10001"
    );
    assert_eq!(
        docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Volumes}}",
            TAG
        ])
        .trim(),
        r#"{"/var/lib/backhaul":{}}"#
    );

    // The shipped configuration.
    let out = docker_output(&["run", "--rm", TAG, "validate"]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (
            Some(0),
            "configuration is valid: 1 data flow(s), 1 enabled, 2 endpoint(s)"
        )
    );

    let volume = Volume(format!("backhaul-image-test-{}", std::process::id()));
    docker(&["volume", "create", &volume.0]);
    let mount = format!("{}:/var/lib/backhaul", volume.0);
    let run_args = [
        "-p",
        "127.0.0.1::1883",
        "-p",
        "127.0.0.1::9600",
        "-v",
        mount.as_str(),
        TAG,
    ];
    let container = Container::run("backhaul-image-test", &run_args);
    wait_healthy(&container);

    // The appliance process runs as uid/gid 10001, as the host sees it.
    let pid = container.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), ["10001"; 4]);
    assert_eq!(ids("Gid:"), ["10001"; 4]);

    let mqtt = container.host_port(1883);
    let metrics = container.host_port(9600);
    publish(mqtt, r#"{"t":21.5}"#);
    wait_delivered(metrics, 1.0);
    let (owners, lines) = files_in(&container, "/var/lib/backhaul");
    assert!(
        owners.iter().all(|o| o.starts_with("10001/10001 ")),
        "everything in the volume belongs to the service user: {owners:?}"
    );
    assert!(
        owners.iter().any(|o| o.ends_with("backhaul/queues/")),
        "the queues are in the volume: {owners:?}"
    );
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(
        lines.contains(r#""id":"backhaul/factory-to-files/1""#),
        "{lines}"
    );
    drop(container);

    // A new container on the same volume carries on where the first stopped.
    let container = Container::run("backhaul-image-test-2", &run_args);
    wait_healthy(&container);
    let mqtt = container.host_port(1883);
    let metrics = container.host_port(9600);
    publish(mqtt, r#"{"t":22.0}"#);
    wait_delivered(metrics, 1.0);
    let (_, lines) = files_in(&container, "/var/lib/backhaul/local-storage");
    let ids: Vec<&str> = lines
        .lines()
        .map(|l| {
            let start = l.find(r#""id":""#).unwrap() + 6;
            &l[start..start + l[start..].find('"').unwrap()]
        })
        .collect();
    assert_eq!(
        ids,
        ["backhaul/factory-to-files/1", "backhaul/factory-to-files/2"]
    );
}

#[test]
fn without_an_engine_the_docker_tests_fail_and_say_why() {
    let problem = engine_problem(Some("unix:///nonexistent/docker.sock")).unwrap();
    assert!(
        problem.starts_with("no Docker engine reachable: `docker info` said: ")
            && problem
                .ends_with("; this test needs one (start dockerd) and never passes by skipping"),
        "{problem}"
    );
    assert!(problem.contains("/nonexistent/docker.sock"), "{problem}");
}
