//! The processes under test. Each is killed when its handle drops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The `backhaul` binary: `$BACKHAUL_BIN`, else the one built beside this
/// test executable (`target/<profile>/backhaul`), else built now.
/// `cargo test --workspace` (the test command) rebuilds it with the bridge's
/// tests; after `cargo test -p backhaul-chaos-tests` alone it may be stale,
/// so build it first (`cargo build -p backhaul-bridge`).
pub fn backhaul_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BACKHAUL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable is in target/<profile>/deps")?;
    let bin = profile_dir.join("backhaul");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "backhaul-bridge", "--bin", "backhaul"])
            .status()?;
        if !status.success() {
            bail!("cargo build of the backhaul binary failed");
        }
    }
    Ok(bin)
}

fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

/// A minimal HTTP GET on loopback: status code and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, "")
}

/// A minimal HTTP/1.1 request on loopback: status code and body.
pub fn http_request(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of one sample (`name{labels}` exactly as exposed) on the
/// `/metrics` of the Backhaul whose metrics listen on loopback `port`.
pub fn scrape(port: u16, sample: &str) -> Result<f64> {
    let text = http_get(port, "/metrics")?.1;
    sample_value(&text, sample).with_context(|| format!("no sample {sample} in:\n{text}"))
}

/// One sample's value in Prometheus text.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// A running `backhaul run`.
pub struct Backhaul {
    child: Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Backhaul {
    /// Starts `backhaul run --config <config> --data-dir <data>` and waits
    /// until `/readyz` answers 200.
    pub fn start(config: &Path, data: &Path, metrics_port: u16) -> Result<Self> {
        Self::start_with_env(config, data, metrics_port, &[])
    }

    /// [`Backhaul::start`] with extra environment variables.
    pub fn start_with_env(
        config: &Path,
        data: &Path,
        metrics_port: u16,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let log = data.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(backhaul_bin()?)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting backhaul")?;
        let mut backhaul = Self {
            child,
            metrics_port,
            log,
        };
        backhaul.wait_ready(Duration::from_secs(30))?;
        Ok(backhaul)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("backhaul exited with {status}; log:\n{}", self.log_text());
            }
            if matches!(http_get(self.metrics_port, "/readyz"), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "backhaul not ready after {timeout:?}; log:\n{}",
            self.log_text()
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> Result<String> {
        Ok(http_get(self.metrics_port, "/metrics")?.1)
    }

    /// The value of one sample (`name{labels}` exactly as exposed).
    pub fn metric(&self, sample: &str) -> Result<f64> {
        scrape(self.metrics_port, sample)
    }

    /// Waits up to `timeout` for `sample` to read `value`; panics with the
    /// log otherwise.
    pub async fn wait_metric(&self, sample: &str, value: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = self.metric(sample);
        while !matches!(last, Ok(v) if v == value) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            last = self.metric(sample);
        }
        if !matches!(last, Ok(v) if v == value) {
            panic!(
                "{sample} is {last:?}, not {value}, after {timeout:?}:\n{}",
                self.log_text()
            );
        }
    }

    /// SIGKILL, as a power cut would.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, as systemd stops it, and waits for the exit status.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM backhaul failed");
        }
        Ok(self.child.wait()?)
    }

    /// Waits (at most `timeout`) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "backhaul still runs after {timeout:?}; log:\n{}",
            self.log_text()
        )
    }

    /// The process id, for `/proc/<pid>/stat` and `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Backhaul {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Mosquitto broker from Debian on loopback, with persistence so an
/// offline persistent subscriber keeps its queue across a broker restart.
pub struct Mosquitto {
    child: Child,
}

impl Mosquitto {
    pub fn start(port: u16, dir: &Path) -> Result<Self> {
        Self::start_with(port, dir, 1_000_000, "")
    }

    /// As [`Self::start`], with room for `max_queued_messages` per client
    /// and `extra` configuration lines (a bridge, autosave settings).
    pub fn start_with(
        port: u16,
        dir: &Path,
        max_queued_messages: u64,
        extra: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages {max_queued_messages}\n\
                 max_inflight_messages 1000\n{}{extra}",
                dir.display(),
                if is_root() { "user root\n" } else { "" }
            ),
        )?;
        let log = std::fs::File::create(dir.join("mosquitto.log"))?;
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto)")?;
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(Self { child })
    }

    /// SIGTERM and wait, so the persistence file is written.
    pub fn stop(mut self) -> Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM mosquitto failed");
        }
        self.child.wait()?;
        Ok(())
    }

    /// SIGKILL: nothing is saved beyond what autosave already wrote.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// The process id, for `/proc/<pid>/stat` and `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Debian installs the broker in /usr/sbin, which a user's PATH may lack.
fn mosquitto_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("mosquitto")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
