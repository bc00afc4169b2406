//! Backhaul in its appliance image ([`crate::images::BACKHAUL`]), started
//! by testcontainers on the scenario's edge network with its MQTT listener
//! and metrics published on fixed host ports (fixed, so they stay the same
//! across `docker kill` and `docker start`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testcontainers::clients::Cli;
use testcontainers::{Container, GenericImage, RunnableImage};

use crate::chaos::accounting::Accounting;
use crate::docker;
use crate::free_port;
use crate::process::{http_get, scrape};

/// The appliance id of every scenario: first part of each message id.
pub const APPLIANCE_ID: &str = "chaos-edge";

/// The uid the image runs as (packaging/build-image.sh).
pub const APPLIANCE_UID: u32 = 10001;

/// The Appliance document of a container: listeners on every interface of
/// the container, queues on disk in the image's volume, quick retries so
/// a scenario does not wait out long back-offs, `storage_extra` fields of
/// `storage` (`", minFreeBytes: 0"`) and `extra` spec lines (indented two
/// spaces).
pub fn appliance_yaml(storage_extra: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: backhaul.dev/v1alpha1
kind: Appliance
metadata: {{name: {APPLIANCE_ID}}}
spec:
  listeners: [{{name: devices, address: "0.0.0.0:1883", allowAnonymous: true}}]
  storage: {{mode: Disk, path: /var/lib/backhaul{storage_extra}}}
  metrics: {{address: "0.0.0.0:9600"}}
  retry: {{initialBackoffMs: 100, maxBackoffSeconds: 2, parkedRetrySeconds: 2}}
{extra}"#
    )
}

/// A configuration directory the image's uid can read, mounted over
/// /etc/backhaul.
pub fn write_config(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for (name, contents) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// The running appliance container.
pub struct ApplianceContainer<'d> {
    pub container: Container<'d, GenericImage>,
    pub name: String,
    /// Host ports: devices publish to `mqtt_port`, tests scrape `metrics_port`.
    pub mqtt_port: u16,
    pub metrics_port: u16,
}

impl<'d> ApplianceContainer<'d> {
    /// Starts the image on `edge` with `config` over /etc/backhaul and, if
    /// given, the named volume `data` over /var/lib/backhaul; waits for
    /// `/readyz`.
    pub fn start(
        cli: &'d Cli,
        edge: &str,
        name: &str,
        config: &Path,
        data: Option<&str>,
    ) -> Result<Self> {
        let (mqtt_port, metrics_port) = (free_port(), free_port());
        let (image, tag) = split_tag(crate::images::BACKHAUL);
        let mut runnable = RunnableImage::from(GenericImage::new(image, tag))
            .with_network(edge)
            .with_container_name(name)
            .with_env_var(("RUST_LOG", "info"))
            .with_volume((config.to_string_lossy().into_owned(), "/etc/backhaul"))
            .with_mapped_port((mqtt_port, 1883))
            .with_mapped_port((metrics_port, 9600));
        if let Some(volume) = data {
            runnable = runnable.with_volume((volume, "/var/lib/backhaul"));
        }
        let container = cli.run(runnable);
        let appliance = Self {
            container,
            name: name.to_string(),
            mqtt_port,
            metrics_port,
        };
        appliance.wait_ready(Duration::from_secs(60))?;
        Ok(appliance)
    }

    /// Waits until `/readyz` answers 200 through the published port.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(http_get(self.metrics_port, "/readyz"), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "backhaul in {} not ready after {timeout:?}; log:\n{}",
            self.name,
            docker::log_tail(&self.name, 60)
        )
    }

    /// `docker kill -s KILL`: no shutdown, as in a power cut.
    pub fn kill9(&self) -> Result<()> {
        docker::kill9(&self.name)
    }

    /// `docker start` on the same volume, then waits for `/readyz`.
    pub fn restart(&self) -> Result<()> {
        docker::start(&self.name)?;
        self.wait_ready(Duration::from_secs(60))
    }

    /// One sample of `/metrics`.
    pub fn metric(&self, sample: &str) -> Result<f64> {
        scrape(self.metrics_port, sample)
    }

    /// The flow's counters, for the accounting identity.
    pub fn accounting(&self, flow: &str) -> Result<Accounting> {
        let text = http_get(self.metrics_port, "/metrics")?.1;
        Accounting::parse(&text, flow).context("reading the flow's counters")
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        docker::log_tail(&self.name, 80)
    }
}

/// `repo/name:tag` into (`repo/name`, `tag`).
pub fn split_tag(image: &str) -> (&str, &str) {
    image.rsplit_once(':').unwrap_or((image, "latest"))
}
