//! The MQTT scenario rig: Backhaul in its container forwarding `factory/#`
//! to a remote Mosquitto in another, over an uplink network the faults cut.
//!
//! ```text
//!   host: publisher ──► :mqtt_port ─┐            ┌─ :remote_port ◄── host: counting subscriber
//!                                   │  edge net  │
//!                       [backhaul] ─┴────────────┴─ [mosquitto]
//!                            └──── uplink net (internal) ────┘  alias "remote"
//! ```
//!
//! Both containers sit on the scenario's edge network (created by
//! testcontainers, where their ports are published) and on an internal
//! uplink network; Backhaul reaches the broker only by its alias on the
//! uplink, so disconnecting the broker from the uplink is a hard link loss
//! while the test's own subscriber, on the edge side, keeps its connection.

use std::time::Duration;

use anyhow::Result;
use testcontainers::clients::Cli;
use testcontainers::core::WaitFor;
use testcontainers::{Container, GenericImage, RunnableImage};

use crate::chaos::appliance::{appliance_yaml, split_tag, write_config, ApplianceContainer};
use crate::config::{dataflow_yaml, mqtt_endpoint_yaml};
use crate::docker::{self, InternalNetwork};
use crate::free_port;
use crate::images;
use crate::mqtt::{create_persistent_subscription, BackgroundCollector};

/// The flow every MQTT scenario runs.
pub const FLOW: &str = "factory-up";
/// The remote broker's name on the uplink network.
pub const REMOTE_ALIAS: &str = "remote";
/// Where devices publish, and where the remote receives it.
pub const DEVICE_TOPIC: &str = "factory/line1/temp";
pub const REMOTE_TOPIC: &str = "cloud/factory/line1/temp";
const SUBSCRIBER: &str = "chaos-counter";

/// How a scenario wants the rig.
#[derive(Debug, Clone, Default)]
pub struct RigOptions {
    /// More fields of the Appliance's `storage` (`", minFreeBytes: 0"`).
    pub storage_extra: String,
    /// More spec lines of the Appliance document (two-space indented).
    pub appliance_extra: String,
    /// A named volume for /var/lib/backhaul instead of the image's own.
    pub data_volume: Option<String>,
    /// Start with the uplink cut (the remote unreachable).
    pub start_cut: bool,
}

pub struct MqttRig<'d> {
    // Field order is drop order: containers first, then the uplink network
    // they are attached to.
    pub backhaul: ApplianceContainer<'d>,
    pub remote: Container<'d, GenericImage>,
    pub remote_name: String,
    /// Host port of the remote broker (edge side).
    pub remote_port: u16,
    pub uplink: InternalNetwork,
    _config: tempfile::TempDir,
}

/// Names unique to this test process.
pub fn unique(scenario: &str) -> String {
    format!("bh-chaos-{scenario}-{}", std::process::id())
}

impl<'d> MqttRig<'d> {
    /// Builds the images (once per run), creates the networks and starts
    /// the remote broker and Backhaul; Backhaul is ready when this returns.
    pub fn start(cli: &'d Cli, scenario: &str, options: RigOptions) -> Result<Self> {
        docker::require_engine()?;
        images::ensure_all()?;
        let base = unique(scenario);
        let edge = format!("{base}-edge");
        let uplink = InternalNetwork::create(&format!("{base}-uplink"))?;

        let remote_name = format!("{base}-remote");
        let remote_port = free_port();
        let (image, tag) = split_tag(images::MOSQUITTO);
        let remote = cli.run(
            RunnableImage::from(
                GenericImage::new(image, tag).with_wait_for(WaitFor::message_on_stderr(" running")),
            )
            .with_network(edge.as_str())
            .with_container_name(remote_name.as_str())
            .with_mapped_port((remote_port, 1883)),
        );
        if !options.start_cut {
            uplink.connect(&remote_name, Some(REMOTE_ALIAS))?;
        }

        let config = tempfile::tempdir()?;
        write_config(
            config.path(),
            &[
                (
                    "appliance.yaml",
                    appliance_yaml(&options.storage_extra, &options.appliance_extra),
                ),
                ("flows.yaml", flows_yaml()),
            ],
        )?;
        let backhaul_name = format!("{base}-backhaul");
        let backhaul = ApplianceContainer::start(
            cli,
            &edge,
            &backhaul_name,
            config.path(),
            options.data_volume.as_deref(),
        )?;
        uplink.connect(&backhaul_name, None)?;
        Ok(Self {
            backhaul,
            remote,
            remote_name,
            remote_port,
            uplink,
            _config: config,
        })
    }

    /// Creates the counting subscriber's persistent session on the remote
    /// and starts it in the background.
    pub async fn counting_subscriber(&self) -> Result<BackgroundCollector> {
        // The broker logged "running"; its published port may still lag.
        let mut attempt = 0;
        loop {
            match create_persistent_subscription(self.remote_port, SUBSCRIBER, "cloud/#").await {
                Ok(()) => break,
                Err(err) if attempt >= 50 => anyhow::bail!("subscribing on the remote: {err}"),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(BackgroundCollector::start(self.remote_port, SUBSCRIBER))
    }

    /// Hard link loss: the remote's uplink interface is removed.
    pub fn cut(&self) -> Result<()> {
        self.uplink.disconnect(&self.remote_name)
    }

    /// The link back, under the same name.
    pub fn restore(&self) -> Result<()> {
        self.uplink.connect(&self.remote_name, Some(REMOTE_ALIAS))
    }

    /// The id prefix of the flow's messages.
    pub fn id_prefix(&self) -> String {
        format!("{}/{FLOW}/", crate::chaos::appliance::APPLIANCE_ID)
    }

    /// The remote's log, for failure messages.
    pub fn remote_log(&self) -> String {
        docker::log_tail(&self.remote_name, 40)
    }
}

/// One flow `factory/#` → the remote at `remote:1883`, topic
/// `cloud/${inputTopic}`, keep-alive 5 s.
fn flows_yaml() -> String {
    format!(
        "{}---\n{}",
        mqtt_endpoint_yaml(&format!("{REMOTE_ALIAS}:1883")),
        dataflow_yaml(FLOW, "factory/#", "cloud", "cloud/${inputTopic}")
    )
}
