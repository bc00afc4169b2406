//! The trials, one system and one payload size each, every one on fresh
//! processes and a fresh directory:
//!
//! - [`steady`] (scenario 2): publish at full speed with the destination up;
//!   end-to-end rate and latency.
//! - [`outage`] (scenarios 1, 3, 5): the destination goes down, the
//!   backlog is published (the PUBACK rate is the ingest figure), the
//!   edge's memory is read, the destination returns while a live
//!   publisher sends at a fixed rate; replay start, drain, live latency.
//! - [`crash`] (scenario 4): as the outage, but the edge is killed with
//!   SIGKILL right after the last PUBACK and restarted on the same data.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::collector::{Collector, SharedCollector};
use super::cpu::{memory, CpuMeter, CpuSource};
use super::payload::{self, LIVE_PUBLISHER, PROBE_PUBLISHER};
use super::publisher::{run_load, Load, LoadReport};
use super::systems::{Destination, Edge, Runtimes, System};

/// Sizes of one run of the harness.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Messages of the steady-state trial.
    pub messages: u64,
    /// Messages published while the destination is down.
    pub backlog: u64,
    pub publishers: usize,
    /// Unacknowledged messages each publisher keeps in flight.
    pub window: usize,
    /// Messages per second of the live publisher during a replay.
    pub live_rate: f64,
    /// A wait for arrivals ends after this long without one.
    pub quiet: Duration,
    /// ... and in any case after this long.
    pub timeout: Duration,
    /// Where trial directories (queues, Mosquitto persistence) go.
    pub dir: PathBuf,
    /// Extra configuration lines of the destination Mosquitto (experiments,
    /// e.g. `set_tcp_nodelay true`); empty by default.
    pub destination_conf: String,
    /// The destination Mosquitto alone on this CPU, everything else on the
    /// others (`placement`); `None`: no pinning.
    pub destination_cpu: Option<usize>,
    /// The counting subscriber's and the Event Hubs peer's threads on this
    /// CPU alone (with `destination_cpu` the same CPU: destination and
    /// subscriber as one remote host); `None`: where the rest of this
    /// program runs.
    pub subscriber_cpu: Option<usize>,
    /// `bridge_protocol_version` of the Mosquitto bridge: `mqttv311` (its
    /// default) or `mqttv50`, the protocol Backhaul's MQTT sink speaks.
    pub bridge_protocol: &'static str,
    /// The counting subscriber waits this long after each read, so how
    /// often it reads (and acknowledges) no longer depends on how much CPU
    /// the edge under test leaves it; `None`: it reads whenever data came.
    pub subscriber_pace: Option<Duration>,
}

/// What reached the destination of what was acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub acked: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
}

impl Counts {
    pub fn lost(&self) -> u64 {
        self.acked.saturating_sub(self.delivered)
    }

    pub fn add(&mut self, other: &Counts) {
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
    }
}

/// Percent of one core, per part, over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuShares {
    pub generator: f64,
    pub counter: f64,
    pub edge: f64,
    pub destination: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Steady {
    /// PUBACKed msg/s with the destination up.
    pub ingest: f64,
    pub end_to_end: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu: CpuShares,
    pub counts: Counts,
}

#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// PUBACKed msg/s with the destination down (scenario 1).
    pub ingest: f64,
    pub ingest_cpu: CpuShares,
    /// `VmRSS` of the edge holding the backlog, bytes.
    pub rss: u64,
    /// `VmHWM` of the edge at the end of the replay, bytes.
    pub hwm: u64,
    pub first_after_return_s: f64,
    pub drain_s: f64,
    pub replay_rate: f64,
    pub live_p99_ms: f64,
    pub drain_cpu: CpuShares,
    pub counts: Counts,
    pub live: Counts,
}

#[derive(Debug, Clone, Default)]
pub struct Crash {
    pub ingest: f64,
    pub restart_s: f64,
    pub delivered_pct: f64,
    pub counts: Counts,
}

/// One system's processes for one trial.
struct Trial<'a> {
    runtimes: &'a Runtimes,
    collector: SharedCollector,
    settings: &'a Settings,
    size: usize,
    // Field order: the edge stops before its destination.
    edge: Edge,
    dest: Destination,
    _dir: tempfile::TempDir,
}

struct Meters {
    generator: CpuMeter,
    counter: CpuMeter,
    edge: CpuMeter,
    destination: CpuMeter,
}

impl Meters {
    fn shares(&self) -> CpuShares {
        CpuShares {
            generator: self.generator.share(),
            counter: self.counter.share(),
            edge: self.edge.share(),
            destination: self.destination.share(),
        }
    }
}

impl<'a> Trial<'a> {
    fn start(
        system: &System,
        size: usize,
        settings: &'a Settings,
        runtimes: &'a Runtimes,
    ) -> Result<Self> {
        std::fs::create_dir_all(&settings.dir)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bench-{}-", system.key))
            .tempdir_in(&settings.dir)?;
        let collector = SharedCollector::default();
        let dest = Destination::start(system.dest, dir.path(), settings, runtimes, &collector)?;
        let max_queued = 2 * (settings.backlog + settings.messages) + 100_000;
        let edge = Edge::start(system.edge, dir.path(), &dest, max_queued, settings)?;
        let trial = Self {
            runtimes,
            collector,
            settings,
            size,
            edge,
            dest,
            _dir: dir,
        };
        trial.probe().context("the path edge → destination")?;
        Ok(trial)
    }

    /// One message end to end, so every connection (bridge, flow,
    /// subscriber session) exists before anything is measured.
    fn probe(&self) -> Result<()> {
        let load = Load {
            port: self.edge.port,
            publishers: 1,
            first_id: PROBE_PUBLISHER,
            count: 1,
            payload_size: self.size,
            window: 1,
            rate: None,
        };
        let report = self.publish(&load, Arc::default());
        if let Some(err) = report.errors.first() {
            bail!("probe: {err}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.collector.lock().probes() == 0 {
            if Instant::now() > deadline {
                bail!("the probe message did not arrive within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn publish(&self, load: &Load, stop: Arc<AtomicBool>) -> LoadReport {
        self.runtimes.generator.block_on(run_load(load, stop))
    }

    fn bulk_load(&self, count: u64) -> Load {
        Load {
            port: self.edge.port,
            publishers: self.settings.publishers,
            first_id: 0,
            count,
            payload_size: self.size,
            window: self.settings.window,
            rate: None,
        }
    }

    fn meters(&self) -> Meters {
        Meters {
            generator: CpuMeter::start(CpuSource::Threads(self.runtimes.generator_threads.clone())),
            counter: CpuMeter::start(CpuSource::Threads(self.runtimes.counter_threads.clone())),
            edge: CpuMeter::start(CpuSource::Process(self.edge.pid())),
            destination: CpuMeter::start(self.dest.cpu_source(self.runtimes)),
        }
    }

    /// Waits until `target` unique messages of a class arrived, or no new
    /// one came for [`Settings::quiet`] (and a Backhaul edge's queue is
    /// empty), or [`Settings::timeout`] passed.
    fn wait_arrivals(&self, target: u64, live: bool) {
        let started = Instant::now();
        let (mut seen, mut changed) = (u64::MAX, started);
        loop {
            let now_seen = {
                let c = self.collector.lock();
                if live {
                    c.live().unique
                } else {
                    c.bulk().unique
                }
            };
            if now_seen >= target {
                return;
            }
            if now_seen != seen {
                (seen, changed) = (now_seen, Instant::now());
            }
            if started.elapsed() > self.settings.timeout {
                return;
            }
            // Quiet for long enough: done, unless Backhaul says it still
            // holds messages (a reconnect can take an SDK timeout).
            if changed.elapsed() > self.settings.quiet && self.edge.holds_messages() != Some(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Counts of the bulk (or live) class; from the Event Hubs peer's store
    /// when the live feed lagged.
    fn counts(&self, acked: u64, live: bool) -> Counts {
        let lagged = self.collector.lock().lagged > 0;
        let recount = if lagged {
            self.dest
                .stored_bodies()
                .map(|bodies| Collector::recounted(&bodies))
        } else {
            None
        };
        let guard = self.collector.lock();
        let c = recount.as_ref().unwrap_or(&guard);
        let class = if live { c.live() } else { c.bulk() };
        Counts {
            acked,
            delivered: class.unique,
            duplicates: class.duplicates,
            reordered: class.reordered,
        }
    }

    /// The destination goes down, and the edge gets a moment to notice.
    fn take_destination_down(&mut self) -> Result<()> {
        self.dest.stop()?;
        std::thread::sleep(Duration::from_millis(300));
        self.collector.reset();
        Ok(())
    }
}

fn check(report: &LoadReport) -> Result<()> {
    if let Some(err) = report.errors.first() {
        bail!(
            "{} publisher(s) failed, the first: {err}",
            report.errors.len()
        );
    }
    Ok(())
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Scenario 2.
pub fn steady(system: &System, size: usize, settings: &Settings, rt: &Runtimes) -> Result<Steady> {
    let trial = Trial::start(system, size, settings, rt)?;
    trial.collector.reset();
    let meters = trial.meters();
    let report = trial.publish(&trial.bulk_load(settings.messages), Arc::default());
    check(&report)?;
    trial.wait_arrivals(report.acked, false);
    let cpu = meters.shares();
    let counts = trial.counts(report.acked, false);
    let c = trial.collector.lock();
    let bulk = c.bulk();
    let span = seconds(
        bulk.last_ns
            .unwrap_or(0)
            .saturating_sub(report.first_sent_ns),
    );
    Ok(Steady {
        ingest: report.ack_rate(),
        end_to_end: if span > 0.0 {
            bulk.unique as f64 / span
        } else {
            0.0
        },
        p50_ms: bulk.latency_ms(0.5).unwrap_or(f64::NAN),
        p99_ms: bulk.latency_ms(0.99).unwrap_or(f64::NAN),
        cpu,
        counts,
    })
}

/// Scenarios 1, 3 and 5.
pub fn outage(system: &System, size: usize, settings: &Settings, rt: &Runtimes) -> Result<Outage> {
    let mut trial = Trial::start(system, size, settings, rt)?;
    trial.take_destination_down()?;
    let meters = trial.meters();
    let report = trial.publish(&trial.bulk_load(settings.backlog), Arc::default());
    check(&report)?;
    let ingest_cpu = meters.shares();
    std::thread::sleep(Duration::from_secs(1));
    let (rss, _) = memory(trial.edge.pid());

    trial.dest.restart()?;
    let returned_ns = payload::now_ns();
    let stop = Arc::new(AtomicBool::new(false));
    let live_load = Load {
        port: trial.edge.port,
        publishers: 1,
        first_id: LIVE_PUBLISHER,
        count: u64::MAX,
        payload_size: size,
        window: settings.window,
        rate: Some(settings.live_rate),
    };
    let live = rt.generator.spawn({
        let stop = stop.clone();
        async move { run_load(&live_load, stop).await }
    });
    // CPU over the same window as the replay rate, first to last replayed
    // arrival: counted from the destination's return, the Mosquitto
    // bridge's seconds of reconnecting would dilute its share.
    trial.wait_arrivals(1, false);
    let meters = trial.meters();
    trial.wait_arrivals(report.acked, false);
    let drain_cpu = meters.shares();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let live_report = rt.generator.block_on(live).context("live publisher")?;
    check(&live_report)?;
    trial.wait_arrivals(live_report.acked, true);
    let (_, hwm) = memory(trial.edge.pid());

    let counts = trial.counts(report.acked, false);
    let live_counts = trial.counts(live_report.acked, true);
    let c = trial.collector.lock();
    let bulk = c.bulk();
    let (first, last) = (bulk.first_ns.unwrap_or(0), bulk.last_ns.unwrap_or(0));
    let drain_s = seconds(last.saturating_sub(first));
    Ok(Outage {
        ingest: report.ack_rate(),
        ingest_cpu,
        rss,
        hwm,
        first_after_return_s: if bulk.first_ns.is_some() {
            seconds(first.saturating_sub(returned_ns))
        } else {
            f64::NAN
        },
        drain_s,
        replay_rate: if drain_s > 0.0 {
            bulk.unique as f64 / drain_s
        } else {
            0.0
        },
        live_p99_ms: c.live().latency_ms(0.99).unwrap_or(f64::NAN),
        drain_cpu,
        counts,
        live: live_counts,
    })
}

/// Scenario 4.
pub fn crash(system: &System, size: usize, settings: &Settings, rt: &Runtimes) -> Result<Crash> {
    let mut trial = Trial::start(system, size, settings, rt)?;
    trial.take_destination_down()?;
    let report = trial.publish(&trial.bulk_load(settings.backlog), Arc::default());
    check(&report)?;
    let restart = trial.edge.kill9_and_restart()?;
    trial.dest.restart()?;
    trial.wait_arrivals(report.acked, false);
    let counts = trial.counts(report.acked, false);
    Ok(Crash {
        ingest: report.ack_rate(),
        restart_s: restart.as_secs_f64(),
        delivered_pct: if counts.acked > 0 {
            100.0 * counts.delivered.min(counts.acked) as f64 / counts.acked as f64
        } else {
            f64::NAN
        },
        counts,
    })
}
