//! `backhaul-bench`'s command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::scenarios::Settings;
use super::systems::{System, SYSTEMS};

pub const USAGE: &str = "\
usage: backhaul-bench [--quick] [--runs N] [--messages N] [--backlog M] [--sizes 200,2048]
                      [--systems backhaul-disk,backhaul-memory,mosquitto,backhaul-eventhubs]
                      [--scenarios steady,outage,crash] [--publishers P] [--window W]
                      [--live-rate R] [--quiet-s S] [--timeout-s S] [--dir DIR]
                      [--output FILE] [--backhaul-bin PATH] [--destination-conf LINES]
                      [--destination-cpu N] [--bridge-protocol mqttv311|mqttv50]
                      [--subscriber-pace-ms MS] [--subscriber-cpu N]

Runs every system on loopback with the same load generator and destination
and writes one markdown report (default BENCHMARKS.md). Defaults: 3 runs,
500,000 messages at steady state, a backlog of 1,000,000, 200 B and 2 KiB,
8 publishers with 1,000 in flight each, live traffic 1,000 msg/s.
--quick: 1 run, 3,000 messages, backlog 3,000, quiet 5 s (a smoke test).
--destination-conf: extra lines for the destination Mosquitto (\\n between
lines), for experiments such as \"set_tcp_nodelay true\".
--destination-cpu N: the destination Mosquitto alone on CPU N, this program
and the edges on the other CPUs (closer to two hosts; default: no pinning).
--bridge-protocol: what the Mosquitto bridge speaks to the destination:
mqttv311 (default, Mosquitto's own default) or mqttv50 (what Backhaul
speaks), for comparing at the same protocol.
--subscriber-pace-ms MS: the counting subscriber waits MS ms after each
read (default: it reads whenever data came, so its reads follow the CPU
the edge leaves free); for A/B runs with less noise.
--subscriber-cpu N: the counting subscriber's and the Event Hubs peer's
threads on CPU N; with --destination-cpu N the destination and its
subscriber are one remote host of one core, the edge and the generator the
other. Keep N off the CPUs that handle the disk's interrupts (the report's
machine table counts them; the bench warns): on two hosts the edge's
flushes never cost the destination's core.";

/// Values of `--bridge-protocol` (Mosquitto's `bridge_protocol_version`).
const BRIDGE_PROTOCOLS: [&str; 2] = ["mqttv311", "mqttv50"];

/// Which trials to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenarios {
    pub steady: bool,
    pub outage: bool,
    pub crash: bool,
}

#[derive(Debug, Clone)]
pub struct Args {
    pub settings: Settings,
    pub runs: usize,
    pub sizes: Vec<usize>,
    pub systems: Vec<System>,
    pub scenarios: Scenarios,
    pub output: PathBuf,
    pub backhaul_bin: Option<PathBuf>,
    pub quick: bool,
}

fn list<T>(value: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    value
        .split(',')
        .filter(|v| !v.is_empty())
        .map(parse)
        .collect()
}

impl Args {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let args: Vec<String> = args.into_iter().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut parsed = Args {
            settings: Settings {
                messages: if quick { 3_000 } else { 500_000 },
                backlog: if quick { 3_000 } else { 1_000_000 },
                publishers: 8,
                window: 1_000,
                live_rate: if quick { 200.0 } else { 1_000.0 },
                quiet: Duration::from_secs(if quick { 5 } else { 15 }),
                timeout: Duration::from_secs(if quick { 60 } else { 900 }),
                dir: std::env::temp_dir(),
                destination_conf: String::new(),
                destination_cpu: None,
                subscriber_cpu: None,
                bridge_protocol: BRIDGE_PROTOCOLS[0],
                subscriber_pace: None,
            },
            runs: if quick { 1 } else { 3 },
            sizes: vec![200, 2048],
            systems: SYSTEMS.to_vec(),
            scenarios: Scenarios {
                steady: true,
                outage: true,
                crash: true,
            },
            output: PathBuf::from("BENCHMARKS.md"),
            backhaul_bin: None,
            quick,
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if arg == "--quick" {
                continue;
            }
            if arg == "-h" || arg == "--help" {
                bail!("{USAGE}");
            }
            let value = it
                .next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
            let number = |v: &str| -> Result<u64> {
                v.replace('_', "")
                    .parse()
                    .with_context(|| format!("{arg}: not a number: {v}"))
            };
            let s = &mut parsed.settings;
            match arg.as_str() {
                "--runs" => parsed.runs = number(&value)?.max(1) as usize,
                "--messages" => s.messages = number(&value)?,
                "--backlog" => s.backlog = number(&value)?,
                "--publishers" => s.publishers = number(&value)?.max(1) as usize,
                "--window" => s.window = number(&value)?.clamp(1, 65_535) as usize,
                "--live-rate" => s.live_rate = number(&value)?.max(1) as f64,
                "--quiet-s" => s.quiet = Duration::from_secs(number(&value)?),
                "--timeout-s" => s.timeout = Duration::from_secs(number(&value)?),
                "--dir" => s.dir = PathBuf::from(value),
                // `\n` separates lines, e.g. "set_tcp_nodelay true".
                "--destination-conf" => s.destination_conf = value.replace("\\n", "\n") + "\n",
                "--destination-cpu" => s.destination_cpu = Some(number(&value)? as usize),
                "--subscriber-cpu" => s.subscriber_cpu = Some(number(&value)? as usize),
                "--bridge-protocol" => {
                    s.bridge_protocol = BRIDGE_PROTOCOLS
                        .into_iter()
                        .find(|p| *p == value)
                        .with_context(|| {
                            format!("--bridge-protocol: {value:?} is not mqttv311 or mqttv50")
                        })?
                }
                "--subscriber-pace-ms" => {
                    s.subscriber_pace = Some(Duration::from_millis(number(&value)?.max(1)))
                }
                "--output" => parsed.output = PathBuf::from(value),
                "--backhaul-bin" => parsed.backhaul_bin = Some(PathBuf::from(value)),
                "--sizes" => parsed.sizes = list(&value, |v| Ok(number(v)? as usize))?,
                "--systems" => {
                    parsed.systems = list(&value, |v| {
                        SYSTEMS
                            .iter()
                            .find(|s| s.key == v)
                            .copied()
                            .with_context(|| format!("--systems: unknown system {v:?}"))
                    })?
                }
                "--scenarios" => {
                    let names = list(&value, |v| Ok(v.to_string()))?;
                    for name in &names {
                        if !["steady", "outage", "crash"].contains(&name.as_str()) {
                            bail!("--scenarios: unknown scenario {name:?} (steady, outage, crash)");
                        }
                    }
                    let has = |n: &str| names.iter().any(|v| v == n);
                    parsed.scenarios = Scenarios {
                        steady: has("steady"),
                        outage: has("outage"),
                        crash: has("crash"),
                    };
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn quick_and_flags() {
        let a = parse(&[
            "--quick",
            "--sizes",
            "200",
            "--systems",
            "mosquitto,backhaul-disk",
        ])
        .unwrap();
        assert!(a.quick);
        assert_eq!(
            (a.runs, a.settings.messages, a.settings.backlog),
            (1, 3_000, 3_000)
        );
        assert_eq!(a.sizes, vec![200]);
        let keys: Vec<&str> = a.systems.iter().map(|s| s.key).collect();
        assert_eq!(keys, vec!["mosquitto", "backhaul-disk"]);
        assert_eq!(a.settings.destination_cpu, None);
        assert_eq!(a.settings.subscriber_cpu, None);
        assert_eq!(a.settings.bridge_protocol, "mqttv311");
        assert_eq!(a.settings.subscriber_pace, None);
        let a = parse(&[
            "--backlog",
            "1_000_000",
            "--scenarios",
            "crash",
            "--destination-cpu",
            "1",
            "--subscriber-cpu",
            "1",
            "--bridge-protocol",
            "mqttv50",
            "--subscriber-pace-ms",
            "2",
        ])
        .unwrap();
        assert_eq!(a.settings.backlog, 1_000_000);
        assert_eq!(a.settings.destination_cpu, Some(1));
        assert_eq!(a.settings.subscriber_cpu, Some(1));
        assert_eq!(a.settings.bridge_protocol, "mqttv50");
        assert_eq!(a.settings.subscriber_pace, Some(Duration::from_millis(2)));
        assert_eq!(
            parse(&["--bridge-protocol", "mqttv5"])
                .unwrap_err()
                .to_string(),
            "--bridge-protocol: \"mqttv5\" is not mqttv311 or mqttv50"
        );
        assert_eq!(
            a.scenarios,
            Scenarios {
                steady: false,
                outage: false,
                crash: true
            }
        );
        assert_eq!(
            parse(&["--systems", "kafka"]).unwrap_err().to_string(),
            "--systems: unknown system \"kafka\""
        );
        assert_eq!(
            parse(&["--runs"]).unwrap_err().to_string(),
            format!("--runs needs a value\n{USAGE}")
        );
    }
}
