//! The systems under test, each started on loopback for one trial: an
//! edge (Backhaul in disk or memory mode, or Mosquitto with a bridge) in
//! front of a destination (a second Mosquitto, or the in-tree Event Hubs
//! peer), and the counting side at the destination.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::collector::SharedCollector;
use super::cpu::{CpuSource, ThreadGroup};
use super::scenarios::Settings;
use super::subscriber::Subscriber;
use crate::config::{appliance_yaml, write_mqtt_bridge_with, TestAppliance};
use crate::eventhubs_peer::{EventHubsPeer, PeerOptions};
use crate::free_port;
use crate::process::{Backhaul, Mosquitto};

/// `max_queued_messages` of the destination Mosquitto (as the kit's).
const DEST_QUEUE: u64 = 1_000_000;

/// The data flow of every Backhaul configuration here.
const FLOW: &str = "factory-up";

/// The persistent session counting at a destination Mosquitto.
pub const SUBSCRIBER_ID: &str = "bench-counter";

/// What every system forwards to (Backhaul: `cloud/${inputTopic}`;
/// Mosquitto: a bridge topic with the remote prefix `cloud/`).
pub const DESTINATION_FILTER: &str = "cloud/#";

/// Backhaul's retry cap, matching the Mosquitto bridge's `restart_timeout 1`
/// so both reconnect within about a second of the destination's return.
const BACKHAUL_RETRY: &str = "  retry: {maxBackoffSeconds: 1}\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    BackhaulDisk,
    BackhaulMemory,
    Mosquitto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestKind {
    Mosquitto,
    EventHubs,
}

/// One column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct System {
    /// Short name used on the command line and in the tables.
    pub key: &'static str,
    pub label: &'static str,
    pub edge: EdgeKind,
    pub dest: DestKind,
}

pub const SYSTEMS: [System; 4] = [
    System {
        key: "backhaul-disk",
        label: "Backhaul disk → Mosquitto",
        edge: EdgeKind::BackhaulDisk,
        dest: DestKind::Mosquitto,
    },
    System {
        key: "backhaul-memory",
        label: "Backhaul memory → Mosquitto",
        edge: EdgeKind::BackhaulMemory,
        dest: DestKind::Mosquitto,
    },
    System {
        key: "mosquitto",
        label: "Mosquitto bridge → Mosquitto",
        edge: EdgeKind::Mosquitto,
        dest: DestKind::Mosquitto,
    },
    System {
        key: "backhaul-eventhubs",
        label: "Backhaul disk → Event Hubs peer",
        edge: EdgeKind::BackhaulDisk,
        dest: DestKind::EventHubs,
    },
];

/// Runtimes of the harness's own parts, each on its own threads so their
/// CPU can be told apart.
pub struct Runtimes {
    pub generator: tokio::runtime::Runtime,
    pub generator_threads: ThreadGroup,
    pub counter: tokio::runtime::Runtime,
    pub counter_threads: ThreadGroup,
    pub peer: tokio::runtime::Runtime,
    pub peer_threads: ThreadGroup,
}

/// A one-worker runtime whose threads count in `threads`, on `cpu` alone
/// if given (checked by the caller, [`super::placement::check`]).
fn runtime(
    name: &str,
    threads: &ThreadGroup,
    cpu: Option<usize>,
) -> Result<tokio::runtime::Runtime> {
    let group = threads.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .on_thread_start(move || {
            group.register_current();
            if let Some(cpu) = cpu {
                if let Err(err) = super::placement::pin_current(cpu) {
                    eprintln!("backhaul-bench: cannot pin a thread to CPU {cpu}: {err}");
                }
            }
        })
        .enable_all()
        .build()
        .with_context(|| format!("runtime {name}"))
}

impl Runtimes {
    /// The runtimes, the destination's side of this process (the counting
    /// subscriber, the Event Hubs peer) on `subscriber_cpu` alone if given;
    /// with the destination Mosquitto on the same CPU, one remote host.
    pub fn new(subscriber_cpu: Option<usize>) -> Result<Self> {
        let (generator_threads, counter_threads, peer_threads) = Default::default();
        Ok(Self {
            generator: runtime("bench-generator", &generator_threads, None)?,
            counter: runtime("bench-counter", &counter_threads, subscriber_cpu)?,
            peer: runtime("bench-peer", &peer_threads, subscriber_cpu)?,
            generator_threads,
            counter_threads,
            peer_threads,
        })
    }
}

/// The destination of one trial.
pub enum Destination {
    Mosquitto {
        port: u16,
        dir: PathBuf,
        conf: String,
        /// `--destination-cpu`: the CPU the broker runs on alone.
        cpu: Option<usize>,
        broker: Option<Mosquitto>,
        /// Kept for the whole trial: it reconnects across outages.
        _subscriber: Subscriber,
    },
    EventHubs {
        peer: EventHubsPeer,
        feed: tokio::task::JoinHandle<()>,
    },
}

impl Destination {
    pub fn start(
        kind: DestKind,
        dir: &Path,
        settings: &Settings,
        runtimes: &Runtimes,
        collector: &SharedCollector,
    ) -> Result<Self> {
        match kind {
            DestKind::Mosquitto => {
                let port = free_port();
                let dir = dir.join("destination");
                let (conf, cpu) = (&settings.destination_conf, settings.destination_cpu);
                let broker =
                    start_destination(port, &dir, conf, cpu).context("destination mosquitto")?;
                let subscriber = Subscriber::start(
                    runtimes.counter.handle(),
                    port,
                    SUBSCRIBER_ID,
                    DESTINATION_FILTER,
                    settings.subscriber_pace,
                    collector.clone(),
                );
                Ok(Destination::Mosquitto {
                    port,
                    dir,
                    conf: conf.clone(),
                    cpu,
                    broker: Some(broker),
                    _subscriber: subscriber,
                })
            }
            DestKind::EventHubs => {
                let peer = runtimes
                    .peer
                    .block_on(EventHubsPeer::start_with(PeerOptions::default()))
                    .context("Event Hubs peer")?;
                let mut events = peer.subscribe();
                let collector = collector.clone();
                let feed = runtimes.counter.spawn(async move {
                    use tokio::sync::broadcast::error::RecvError;
                    loop {
                        match events.recv().await {
                            Ok(event) => collector
                                .lock()
                                .record(&event.body, super::payload::now_ns()),
                            Err(RecvError::Lagged(n)) => collector.lock().lagged += n,
                            Err(RecvError::Closed) => return,
                        }
                    }
                });
                Ok(Destination::EventHubs { peer, feed })
            }
        }
    }

    /// Where the destination's CPU time is read.
    pub fn cpu_source(&self, runtimes: &Runtimes) -> CpuSource {
        match self {
            Destination::Mosquitto { broker, .. } => {
                CpuSource::Process(broker.as_ref().map(Mosquitto::pid).unwrap_or(0))
            }
            Destination::EventHubs { .. } => CpuSource::Threads(runtimes.peer_threads.clone()),
        }
    }

    /// The destination goes away: Mosquitto stops (SIGTERM, its sessions
    /// saved); the Event Hubs peer refuses new connections and cuts the open
    /// ones.
    pub fn stop(&mut self) -> Result<()> {
        match self {
            Destination::Mosquitto { broker, .. } => {
                if let Some(broker) = broker.take() {
                    broker.stop()?;
                }
            }
            Destination::EventHubs { peer, .. } => {
                peer.refuse_connections(true);
                peer.drop_connections();
            }
        }
        Ok(())
    }

    /// The destination returns (listening when this returns).
    pub fn restart(&mut self) -> Result<()> {
        match self {
            Destination::Mosquitto {
                port,
                dir,
                conf,
                cpu,
                broker,
                ..
            } => {
                if broker.is_none() {
                    *broker = Some(start_destination(*port, dir, conf, *cpu)?);
                }
            }
            Destination::EventHubs { peer, .. } => peer.refuse_connections(false),
        }
        Ok(())
    }

    /// Event Hubs: every event the peer stored, as bodies (the broadcast
    /// feed may lag; the store does not).
    pub fn stored_bodies(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Destination::EventHubs { peer, .. } => {
                Some(peer.events().into_iter().map(|e| e.body).collect())
            }
            Destination::Mosquitto { .. } => None,
        }
    }

    fn mqtt_port(&self) -> Option<u16> {
        match self {
            Destination::Mosquitto { port, .. } => Some(*port),
            Destination::EventHubs { .. } => None,
        }
    }
}

fn start_destination(port: u16, dir: &Path, conf: &str, cpu: Option<usize>) -> Result<Mosquitto> {
    let broker = Mosquitto::start_with(port, dir, DEST_QUEUE, conf)?;
    if let Some(cpu) = cpu {
        super::placement::pin(broker.pid(), cpu)?;
    }
    Ok(broker)
}

impl Drop for Destination {
    fn drop(&mut self) {
        if let Destination::EventHubs { feed, .. } = self {
            feed.abort();
        }
    }
}

/// The edge of one trial: its process and how to start it again.
pub struct Edge {
    pub kind: EdgeKind,
    pub port: u16,
    dir: PathBuf,
    process: Option<EdgeProcess>,
    metrics_port: u16,
    dest_port: Option<u16>,
    max_queued: u64,
    bridge_protocol: &'static str,
}

enum EdgeProcess {
    Backhaul(Backhaul),
    Mosquitto(Mosquitto),
}

impl Edge {
    /// Writes the edge's configuration for `dest` and starts it.
    pub fn start(
        kind: EdgeKind,
        dir: &Path,
        dest: &Destination,
        max_queued: u64,
        settings: &Settings,
    ) -> Result<Self> {
        let mut edge = Self {
            kind,
            port: free_port(),
            dir: dir.join("edge"),
            process: None,
            metrics_port: free_port(),
            dest_port: dest.mqtt_port(),
            max_queued,
            bridge_protocol: settings.bridge_protocol,
        };
        std::fs::create_dir_all(&edge.dir)?;
        if kind != EdgeKind::Mosquitto {
            edge.write_backhaul_config(dest)?;
        }
        edge.launch()?;
        Ok(edge)
    }

    fn write_backhaul_config(&self, dest: &Destination) -> Result<()> {
        let appliance = TestAppliance {
            mqtt_port: self.port,
            metrics_port: self.metrics_port,
            storage: if self.kind == EdgeKind::BackhaulMemory {
                "Memory"
            } else {
                "Disk"
            },
        };
        let config = self.dir.join("config");
        match dest {
            Destination::Mosquitto { port, .. } => {
                write_mqtt_bridge_with(&config, &appliance, *port, BACKHAUL_RETRY);
                same_inflight_as_the_bridge(&config.join("flows.yaml"))?;
            }
            Destination::EventHubs { peer, .. } => {
                let secret = config.join("secrets/hub-conn");
                std::fs::create_dir_all(&secret)?;
                std::fs::write(
                    secret.join("connectionString"),
                    peer.connection_string(None),
                )?;
                std::fs::write(
                    config.join("appliance.yaml"),
                    appliance_yaml(&appliance, BACKHAUL_RETRY),
                )?;
                std::fs::write(
                    config.join("flows.yaml"),
                    eventhubs_flow(peer.namespace(), &peer.endpoint()),
                )?;
            }
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<()> {
        let process = match self.kind {
            EdgeKind::Mosquitto => {
                let dest_port = self.dest_port.context("a Mosquitto edge bridges to MQTT")?;
                EdgeProcess::Mosquitto(Mosquitto::start_with(
                    self.port,
                    &self.dir,
                    self.max_queued,
                    &mosquitto_bridge(dest_port, self.bridge_protocol),
                )?)
            }
            _ => EdgeProcess::Backhaul(Backhaul::start(
                &self.dir.join("config"),
                &self.dir.join("data"),
                self.metrics_port,
            )?),
        };
        self.process = Some(process);
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Some(EdgeProcess::Backhaul(b)) => b.pid(),
            Some(EdgeProcess::Mosquitto(m)) => m.pid(),
            None => 0,
        }
    }

    /// Whether the edge still holds messages for the destination: Backhaul's
    /// `backhaul_queue_messages` of the flow; `None` for Mosquitto (it does
    /// not say) or when the metric cannot be read.
    pub fn holds_messages(&self) -> Option<bool> {
        match &self.process {
            Some(EdgeProcess::Backhaul(b)) => b
                .metric(&format!("backhaul_queue_messages{{flow=\"{FLOW}\"}}"))
                .ok()
                .map(|queued| queued > 0.0),
            _ => None,
        }
    }

    /// kill -9, then the same edge on the same data: how long it took to
    /// accept connections (Backhaul: until `/readyz` answers 200).
    pub fn kill9_and_restart(&mut self) -> Result<Duration> {
        match self.process.take() {
            Some(EdgeProcess::Backhaul(b)) => b.kill9()?,
            Some(EdgeProcess::Mosquitto(m)) => m.kill9()?,
            None => {}
        }
        let started = Instant::now();
        self.launch()?;
        Ok(started.elapsed())
    }
}

/// Messages in flight toward the destination: the Mosquitto bridge gets
/// `max_inflight_messages 1000` from the edge's configuration
/// (`Mosquitto::start_with`), so Backhaul's flow gets the same window, and
/// the destination (also at 1000) advertises a Receive Maximum that allows
/// it.
const INFLIGHT_MESSAGES: u32 = 1000;

/// Sets `maxInflightMessages` of the MQTT endpoint in `flows` to
/// [`INFLIGHT_MESSAGES`].
fn same_inflight_as_the_bridge(flows: &std::path::Path) -> Result<()> {
    let yaml = std::fs::read_to_string(flows)?;
    let setting = "    keepAliveSeconds: 5\n";
    anyhow::ensure!(yaml.contains(setting), "no keepAliveSeconds in {flows:?}");
    let with_window = format!("{setting}    maxInflightMessages: {INFLIGHT_MESSAGES}\n");
    std::fs::write(flows, yaml.replacen(setting, &with_window, 1))?;
    Ok(())
}

/// The edge Mosquitto's bridge (`shared/reference/baseline.md` §3):
/// persistence, QoS 1, clean session off, reconnect after 1 s, default
/// autosave (every 1800 s, and at a clean exit), speaking `protocol`.
fn mosquitto_bridge(dest_port: u16, protocol: &str) -> String {
    format!(
        "connection cloud\naddress 127.0.0.1:{dest_port}\ntopic factory/# out 1 \"\" cloud/\n\
         cleansession false\nremote_clientid bench-edge\nrestart_timeout 1\n\
         bridge_protocol_version {protocol}\n"
    )
}

fn eventhubs_flow(namespace: &str, endpoint: &str) -> String {
    format!(
        r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {{name: hubs}}
spec:
  endpointType: EventHubs
  eventHubsSettings:
    host: {namespace}
    customEndpoint: "{endpoint}"
    authentication:
      method: ConnectionString
      connectionStringSettings: {{secretRef: hub-conn}}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata: {{name: factory-up}}
spec:
  profileRef: default
  operations:
    - operationType: Source
      sourceSettings: {{endpointRef: default, dataSources: ["factory/#"]}}
    - operationType: Destination
      destinationSettings: {{endpointRef: hubs, dataDestination: telemetry}}
"#
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::bench::args::Args;

    /// The CPUs the calling thread may run on.
    fn allowed_cpus() -> String {
        crate::bench::placement::allowed_list("/proc/thread-self/status")
    }

    #[test]
    fn the_destination_side_runs_on_its_cpu_and_the_generator_where_it_was() {
        let before = allowed_cpus();
        let runtimes = Runtimes::new(Some(0)).unwrap();
        let on = |rt: &tokio::runtime::Runtime| {
            rt.block_on(async { tokio::spawn(async { allowed_cpus() }).await.unwrap() })
        };
        assert_eq!(on(&runtimes.counter), "0");
        assert_eq!(on(&runtimes.peer), "0");
        assert_eq!(on(&runtimes.generator), before);
    }

    /// What the destination logged of the bridge's connection, once it came.
    fn bridge_connection_logged(dest_dir: &Path) -> String {
        let log = dest_dir.join("destination/mosquitto.log");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("as bench-edge (")) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no bridge connection in:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn the_edge_mosquitto_bridges_with_the_protocol_of_the_flag() {
        // Mosquitto logs the protocol level: 2 for MQTT 3.1.1, 5 for MQTT 5.
        for (flag, level) in [("mqttv311", "(p2,"), ("mqttv50", "(p5,")] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_str().unwrap();
            let args =
                Args::parse(["--bridge-protocol", flag, "--dir", dir].map(String::from)).unwrap();
            let runtimes = Runtimes::new(None).unwrap();
            let collector = SharedCollector::default();
            let dest = Destination::start(
                DestKind::Mosquitto,
                tmp.path(),
                &args.settings,
                &runtimes,
                &collector,
            )
            .unwrap();
            let _edge = Edge::start(
                EdgeKind::Mosquitto,
                tmp.path(),
                &dest,
                1_000,
                &args.settings,
            )
            .unwrap();
            let line = bridge_connection_logged(tmp.path());
            assert!(line.contains(level), "{flag}: {line}");
        }
    }

    #[test]
    fn the_bridge_speaks_the_protocol_asked_for() {
        for protocol in ["mqttv311", "mqttv50"] {
            let conf = mosquitto_bridge(1883, protocol);
            let line = format!("bridge_protocol_version {protocol}");
            assert_eq!(
                conf.lines()
                    .filter(|l| l.starts_with("bridge_protocol"))
                    .count(),
                1
            );
            assert!(conf.lines().any(|l| l == line), "{conf}");
            assert!(conf.contains("address 127.0.0.1:1883\n"), "{conf}");
        }
    }
}
