//! The `backhaul` binary under a stand-in for systemd: the test binds the
//! notification socket, starts `backhaul run` with `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC` as systemd sets them for a `Type=notify` unit, and reads
//! what arrives.

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backhaul_chaos_tests::config::{write_local_files, TestAppliance};
use backhaul_chaos_tests::free_port;
use backhaul_chaos_tests::process::http_get;

/// Longest wait for one notification; a hung appliance fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path, data: &Path, env: &[(&str, &str)]) -> Running {
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_backhaul"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start backhaul");
    Running { child }
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8(buf[..n].to_vec()).expect("notifications are text")
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn ready_after_the_listeners_accept_then_watchdog_pings_then_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let appliance = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Disk",
    };
    let config = tmp.path().join("config");
    write_local_files(&config, &appliance);
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();

    let mut backhaul = start(
        &config,
        &tmp.path().join("data"),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // 0.4 s: a ping every 0.2 s.
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    assert_eq!(receive(&socket), "STATUS=opening the queues");
    let ready = receive(&socket);
    // When READY=1 arrives, devices can connect and /readyz says so.
    let mqtt = TcpStream::connect(("127.0.0.1", appliance.mqtt_port));
    assert!(
        mqtt.is_ok(),
        "the MQTT port accepts connections at READY=1: {mqtt:?}"
    );
    assert_eq!(
        http_get(appliance.metrics_port, "/readyz").unwrap(),
        (200, "ready\n".to_string())
    );
    assert_eq!(
        ready,
        "READY=1\nSTATUS=ready: 1 flow(s), 0 message(s) queued"
    );

    for _ in 0..3 {
        assert_eq!(
            receive(&socket),
            "WATCHDOG=1\nSTATUS=ready: 1 flow(s), 0 message(s) queued"
        );
    }

    terminate(&backhaul.child);
    // Pings may still come while the flows finish; STOPPING=1 must come.
    let mut after_term = Vec::new();
    loop {
        let message = receive(&socket);
        let stopping = message.starts_with("STOPPING=1");
        after_term.push(message);
        if stopping {
            break;
        }
    }
    assert_eq!(
        after_term.last().unwrap(),
        "STOPPING=1\nSTATUS=shutting down: finishing the batches in flight"
    );
    assert!(
        after_term[..after_term.len() - 1]
            .iter()
            .all(|m| m.starts_with("WATCHDOG=1\n")),
        "only watchdog pings before STOPPING=1: {after_term:?}"
    );
    let status = backhaul.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a clean stop exits 0");
}

#[test]
fn no_watchdog_pings_for_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let appliance = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Memory",
    };
    let config = tmp.path().join("config");
    write_local_files(&config, &appliance);
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();

    // systemd sets WATCHDOG_PID when the watchdog is meant for another
    // process (the main one, when this one is a child).
    let backhaul = start(
        &config,
        &tmp.path().join("data"),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    assert_eq!(receive(&socket), "STATUS=opening the queues");
    assert_eq!(
        receive(&socket),
        "READY=1\nSTATUS=ready: 1 flow(s), 0 message(s) queued"
    );
    terminate(&backhaul.child);
    // The next datagram is STOPPING=1: no ping came in between.
    assert_eq!(
        receive(&socket),
        "STOPPING=1\nSTATUS=shutting down: finishing the batches in flight"
    );
}

#[test]
fn an_unusable_notify_socket_does_not_stop_the_appliance() {
    let tmp = tempfile::tempdir().unwrap();
    let appliance = TestAppliance {
        mqtt_port: free_port(),
        metrics_port: free_port(),
        storage: "Memory",
    };
    let config = tmp.path().join("config");
    write_local_files(&config, &appliance);
    let data = tmp.path().join("data");
    let mut backhaul = start(
        &config,
        &data,
        &[
            ("NOTIFY_SOCKET", "/nonexistent/notify.sock"),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut answer = http_get(appliance.metrics_port, "/readyz");
    for _ in 0..1500 {
        if matches!(answer, Ok((200, _))) {
            break;
        }
        assert!(
            backhaul.child.try_wait().unwrap().is_none(),
            "backhaul exited; log:\n{}",
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
        answer = http_get(appliance.metrics_port, "/readyz");
    }
    assert_eq!(answer.unwrap(), (200, "ready\n".to_string()));
    terminate(&backhaul.child);
    assert_eq!(backhaul.child.wait().unwrap().code(), Some(0));
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(
        log.contains("cannot notify systemd"),
        "the failed notification is logged:\n{log}"
    );
}
