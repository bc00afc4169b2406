//! The Event Hubs scenario rig: Backhaul in its container sends `factory/#`
//! through the official SDK over AMQP to the in-tree Event Hubs peer in
//! another container. The peer prints one line per stored event (the
//! count the scenario checks) and takes fault commands on a control port
//! published to the host.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testcontainers::clients::Cli;
use testcontainers::core::WaitFor;
use testcontainers::{Container, GenericImage, RunnableImage};

use crate::chaos::appliance::{appliance_yaml, split_tag, write_config, ApplianceContainer};
use crate::chaos::mqtt_rig::unique;
use crate::chaos::verdict::Delivery;
use crate::config::{dataflow_yaml, EventHubsEndpointYaml, CONNECTION_STRING_AUTH};
use crate::docker::{self, InternalNetwork};
use crate::eventhubs_peer::DEFAULT_NAMESPACE;
use crate::free_port;
use crate::images;

pub const FLOW: &str = "to-hub";
pub const HUB: &str = "telemetry";
/// The peer's name on the uplink network.
pub const PEER_ALIAS: &str = "hub";

pub struct EventHubsRig<'d> {
    // Drop order: containers, then the uplink network.
    pub backhaul: ApplianceContainer<'d>,
    pub peer: Container<'d, GenericImage>,
    pub peer_name: String,
    /// Host port of the peer's fault switches.
    pub control_port: u16,
    pub uplink: InternalNetwork,
    _config: tempfile::TempDir,
}

impl<'d> EventHubsRig<'d> {
    /// Starts the peer (with `peer_args` after its own) and Backhaul.
    pub fn start(cli: &'d Cli, scenario: &str, peer_args: &[&str]) -> Result<Self> {
        docker::require_engine()?;
        images::ensure_all()?;
        let base = unique(scenario);
        let edge = format!("{base}-edge");
        let uplink = InternalNetwork::create(&format!("{base}-uplink"))?;

        let peer_name = format!("{base}-peer");
        let control_port = free_port();
        let (image, tag) = split_tag(images::EVENTHUBS_PEER);
        let args: Vec<String> = peer_args.iter().map(|s| s.to_string()).collect();
        let peer = cli.run(
            RunnableImage::from((
                GenericImage::new(image, tag)
                    .with_wait_for(WaitFor::message_on_stdout("listening")),
                args,
            ))
            .with_network(edge.as_str())
            .with_container_name(peer_name.as_str())
            .with_mapped_port((control_port, 5673)),
        );
        uplink.connect(&peer_name, Some(PEER_ALIAS))?;

        let config = tempfile::tempdir()?;
        let connection_string = format!(
            "Endpoint=sb://{DEFAULT_NAMESPACE}/;SharedAccessKeyName=RootManageSharedAccessKey;\
             SharedAccessKey=YmFja2hhdWwtdGVzdC1rZXktbm90LWEtc2VjcmV0"
        );
        write_config(
            config.path(),
            &[
                ("appliance.yaml", appliance_yaml("", "")),
                ("flows.yaml", flows_yaml()),
                ("secrets/hub-conn/connectionString", connection_string),
            ],
        )?;
        let backhaul_name = format!("{base}-backhaul");
        let backhaul = ApplianceContainer::start(cli, &edge, &backhaul_name, config.path(), None)?;
        uplink.connect(&backhaul_name, None)?;
        Ok(Self {
            backhaul,
            peer,
            peer_name,
            control_port,
            uplink,
            _config: config,
        })
    }

    /// Sends one fault command (`slow 200`, `slow off`, `clear`, ...) to the
    /// peer's control port; returns its answer.
    pub fn control(&self, command: &str) -> Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.control_port))
            .context("connecting to the peer's control port")?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        let answer = answer.trim().to_string();
        if !answer.starts_with("ok") {
            bail!("peer answered {answer:?} to {command:?}");
        }
        Ok(answer)
    }

    /// Hard link loss: the peer's uplink interface is removed.
    pub fn cut(&self) -> Result<()> {
        self.uplink.disconnect(&self.peer_name)
    }

    /// The link back, under the same name.
    pub fn restore(&self) -> Result<()> {
        self.uplink.connect(&self.peer_name, Some(PEER_ALIAS))
    }

    /// Every event the peer stored so far, in arrival order, from its log.
    pub fn events(&self) -> Vec<Delivery> {
        parse_events(&docker::logs(&self.peer_name))
    }

    pub fn id_prefix(&self) -> String {
        format!("{}/{FLOW}/", crate::chaos::appliance::APPLIANCE_ID)
    }
}

/// The peer's `event ... id=<id> ... body="<n>"` lines as deliveries.
pub fn parse_events(log: &str) -> Vec<Delivery> {
    log.lines()
        .filter_map(|line| {
            let line = line.strip_prefix("event ")?;
            let id = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("id="))?;
            let body = line.rsplit_once(" body=")?.1;
            let number = body.trim().trim_matches('"').parse().unwrap_or(u64::MAX);
            Some(Delivery {
                number,
                id: id.to_string(),
            })
        })
        .collect()
}

/// One flow `factory/#` → hub `telemetry` on the peer, batches of up to 100,
/// one at a time: the scenarios judge the order of the whole stream, which
/// events without a partition key keep only then (README, Event Hubs).
fn flows_yaml() -> String {
    let endpoint = EventHubsEndpointYaml {
        namespace: DEFAULT_NAMESPACE,
        custom_endpoint: &format!("amqp://{PEER_ALIAS}:5672"),
        authentication: CONNECTION_STRING_AUTH,
        partition_strategy: "Default",
        max_messages: 100,
        timeout_secs: 10,
        max_in_flight_batches: 1,
    }
    .render();
    format!(
        "{endpoint}---\n{}",
        dataflow_yaml(FLOW, "factory/#", "hubs", HUB)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peers_event_lines() {
        let log = "listening amqp://0.0.0.0:5672\n\
                   event seq=1 hub=telemetry partition=0 key=- id=e/f/1 content-type=- props={} body=\"17\"\n\
                   control: ok slow 5\n";
        assert_eq!(
            parse_events(log),
            vec![Delivery {
                number: 17,
                id: "e/f/1".to_string()
            }]
        );
    }
}
