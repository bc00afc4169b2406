//! The markdown report: one table of figures (medians of the runs, each
//! run in brackets, Backhaul ÷ Mosquitto ratios computed run by run), the
//! counts that show nothing was lost or duplicated, where the CPU went,
//! and the machine.

use std::fmt::Write as _;

use super::scenarios::{Counts, CpuShares, Crash, Outage, Steady};
use super::systems::{EdgeKind, System};

/// Every trial's result of one system, payload size and run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub system: System,
    pub size: usize,
    pub run: usize,
    pub steady: Option<Steady>,
    pub outage: Option<Outage>,
    pub crash: Option<Crash>,
    pub errors: Vec<String>,
}

type Extract = fn(&Sample) -> Option<f64>;

/// One row of the main table: label, how to read it from a sample, and the
/// issue's goal for it.
struct Figure {
    label: &'static str,
    value: Extract,
    goal: &'static str,
}

const MB: f64 = 1024.0 * 1024.0;

fn figures() -> Vec<Figure> {
    vec![
        Figure {
            label: "1 ingest, PUBACKed msg/s (destination down)",
            value: |s| s.outage.as_ref().map(|o| o.ingest),
            goal: "Backhaul disk ≥ 1.0×",
        },
        Figure {
            label: "2 end-to-end msg/s",
            value: |s| s.steady.as_ref().map(|o| o.end_to_end),
            goal: "≥ 1.0×; Event Hubs ≥ 100k (200 B)",
        },
        Figure {
            label: "2 ingest with the destination up, PUBACKed msg/s",
            value: |s| s.steady.as_ref().map(|o| o.ingest),
            goal: "",
        },
        Figure {
            label: "2 latency p50, ms (publishers at full speed)",
            value: |s| s.steady.as_ref().map(|o| o.p50_ms),
            goal: "",
        },
        Figure {
            label: "2 latency p99, ms (publishers at full speed)",
            value: |s| s.steady.as_ref().map(|o| o.p99_ms),
            goal: "",
        },
        Figure {
            label: "2 destination CPU, % of a core",
            value: |s| s.steady.as_ref().map(|o| o.cpu.destination),
            goal: "the destination is the limit",
        },
        Figure {
            label: "2 edge CPU, % of a core",
            value: |s| s.steady.as_ref().map(|o| o.cpu.edge),
            goal: "",
        },
        Figure {
            label: "3 destination back → first replayed message, s",
            value: |s| s.outage.as_ref().map(|o| o.first_after_return_s),
            goal: "≤ 1 s",
        },
        Figure {
            label: "3 drain time (first → last replayed), s",
            value: |s| s.outage.as_ref().map(|o| o.drain_s),
            goal: "",
        },
        Figure {
            label: "3 replay msg/s",
            value: |s| s.outage.as_ref().map(|o| o.replay_rate),
            goal: "≥ 1.0×",
        },
        Figure {
            label: "3 live messages during the replay: latency p99, ms",
            value: |s| s.outage.as_ref().map(|o| o.live_p99_ms),
            goal: "",
        },
        Figure {
            label: "3 destination CPU during the drain, % of a core",
            value: |s| s.outage.as_ref().map(|o| o.drain_cpu.destination),
            goal: "",
        },
        Figure {
            label: "3 edge CPU during the drain, % of a core",
            value: |s| s.outage.as_ref().map(|o| o.drain_cpu.edge),
            goal: "",
        },
        Figure {
            label: "3 destination CPU per replayed message, µs",
            value: |s| {
                s.outage
                    .as_ref()
                    .and_then(|o| per_message_us(o.drain_cpu.destination, o.replay_rate))
            },
            goal: "",
        },
        Figure {
            label: "3 counting subscriber / peer feed CPU per replayed message, µs",
            value: |s| {
                s.outage
                    .as_ref()
                    .and_then(|o| per_message_us(o.drain_cpu.counter, o.replay_rate))
            },
            goal: "",
        },
        Figure {
            label: "4 kill -9 during the outage: % of PUBACKed delivered",
            value: |s| s.crash.as_ref().map(|o| o.delivered_pct),
            goal: "Backhaul disk 100 %",
        },
        Figure {
            label: "4 restart after kill -9 until accepting, s",
            value: |s| s.crash.as_ref().map(|o| o.restart_s),
            goal: "",
        },
        Figure {
            label: "5 edge RSS holding the backlog, MB",
            value: |s| s.outage.as_ref().map(|o| o.rss as f64 / MB),
            goal: "≤ 1/8 (0.125×)",
        },
        Figure {
            label: "5 edge peak RSS (VmHWM) after the replay, MB",
            value: |s| s.outage.as_ref().map(|o| o.hwm as f64 / MB),
            goal: "",
        },
        Figure {
            label: "generator CPU during ingest, % of a core",
            value: |s| s.outage.as_ref().map(|o| o.ingest_cpu.generator),
            goal: "≪ 100 (not the limit)",
        },
    ]
}

/// CPU time per message, in µs, of a process that used `share` % of a
/// core while `rate` messages per second passed: comparable across systems
/// that ran at different rates.
fn per_message_us(share: f64, rate: f64) -> Option<f64> {
    (rate > 0.0).then(|| share / 100.0 / rate * 1e6)
}

fn median(values: &mut Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// 3 significant digits, thousands as `k`.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let (v, suffix) = if v.abs() >= 10_000.0 {
        (v / 1000.0, "k")
    } else {
        (v, "")
    };
    let text = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{text}{suffix}")
}

fn cell(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    match median(&mut sorted) {
        None => "–".to_string(),
        Some(m) if values.len() > 1 => {
            let runs: Vec<String> = values.iter().map(|v| number(*v)).collect();
            format!("**{}** [{}]", number(m), runs.join(", "))
        }
        Some(m) => format!("**{}**", number(m)),
    }
}

/// The harness's results and how to render them.
pub struct Report<'a> {
    pub samples: &'a [Sample],
    pub systems: &'a [System],
    pub sizes: &'a [usize],
    pub runs: usize,
}

impl Report<'_> {
    fn values(&self, system: &System, size: usize, value: Extract) -> Vec<f64> {
        (0..self.runs)
            .filter_map(|run| {
                self.samples
                    .iter()
                    .find(|s| s.system.key == system.key && s.size == size && s.run == run)
                    .and_then(value)
            })
            .collect()
    }

    /// `system ÷ base`, run by run (only runs where both have a value).
    fn ratios(&self, system: &System, base: &System, size: usize, value: Extract) -> Vec<f64> {
        let find = |sys: &System, run: usize| {
            self.samples
                .iter()
                .find(|s| s.system.key == sys.key && s.size == size && s.run == run)
                .and_then(value)
        };
        (0..self.runs)
            .filter_map(|run| match (find(system, run), find(base, run)) {
                (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
                _ => None,
            })
            .collect()
    }

    fn mosquitto(&self) -> Option<&System> {
        self.systems.iter().find(|s| s.edge == EdgeKind::Mosquitto)
    }

    /// Systems compared with the Mosquitto bridge (same destination).
    fn compared(&self) -> Vec<&System> {
        self.systems
            .iter()
            .filter(|s| {
                s.edge != EdgeKind::Mosquitto && s.dest == super::systems::DestKind::Mosquitto
            })
            .collect()
    }

    /// The main table.
    pub fn figures_table(&self) -> String {
        let mut out = String::new();
        let mut header = vec!["payload".to_string(), "figure".to_string()];
        header.extend(self.systems.iter().map(|s| s.label.to_string()));
        let base = self.mosquitto();
        if base.is_some() {
            header.extend(
                self.compared()
                    .iter()
                    .map(|s| format!("{} ÷ Mosquitto", s.key)),
            );
        }
        header.push("goal".to_string());
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for &size in self.sizes {
            for figure in figures() {
                let mut row = vec![format!("{size} B"), figure.label.to_string()];
                for system in self.systems {
                    row.push(cell(&self.values(system, size, figure.value)));
                }
                if let Some(base) = base {
                    for system in self.compared() {
                        row.push(cell(&self.ratios(system, base, size, figure.value)));
                    }
                }
                row.push(figure.goal.to_string());
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
        }
        out
    }

    /// Counts summed over the runs: PUBACKed, delivered, lost, duplicated,
    /// out of order. Scenario names: `2 steady`, `3 outage`, `3 live`,
    /// `4 kill -9`.
    pub fn counts_table(&self) -> String {
        let mut out = String::from(
            "| system | payload | scenario | runs | PUBACKed | delivered | lost | duplicates | out of order |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        type Pick = fn(&Sample) -> Option<Counts>;
        let scenarios: [(&str, Pick); 4] = [
            ("2 steady", |s| s.steady.as_ref().map(|x| x.counts)),
            ("3 outage", |s| s.outage.as_ref().map(|x| x.counts)),
            ("3 live", |s| s.outage.as_ref().map(|x| x.live)),
            ("4 kill -9", |s| s.crash.as_ref().map(|x| x.counts)),
        ];
        for system in self.systems {
            for &size in self.sizes {
                for (name, pick) in scenarios {
                    let mut total = Counts::default();
                    let mut runs = 0;
                    for sample in self
                        .samples
                        .iter()
                        .filter(|s| s.system.key == system.key && s.size == size)
                    {
                        if let Some(c) = pick(sample) {
                            total.add(&c);
                            runs += 1;
                        }
                    }
                    if runs == 0 {
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "| {} | {size} B | {name} | {runs} | {} | {} | {} | {} | {} |",
                        system.key,
                        total.acked,
                        total.delivered,
                        total.lost(),
                        total.duplicates,
                        total.reordered
                    );
                }
            }
        }
        out
    }

    /// Medians of CPU shares per phase.
    pub fn cpu_table(&self) -> String {
        let mut out = String::from(
            "| system | payload | phase | generator | counting subscriber / peer feed | edge | destination |\n\
             |---|---|---|---|---|---|---|\n",
        );
        type Pick = fn(&Sample) -> Option<CpuShares>;
        let phases: [(&str, Pick); 3] = [
            ("2 steady", |s| s.steady.as_ref().map(|x| x.cpu)),
            ("1 ingest (destination down)", |s| {
                s.outage.as_ref().map(|x| x.ingest_cpu)
            }),
            ("3 drain (first → last replayed)", |s| {
                s.outage.as_ref().map(|x| x.drain_cpu)
            }),
        ];
        for system in self.systems {
            for &size in self.sizes {
                for (name, pick) in phases {
                    let shares: Vec<CpuShares> = self
                        .samples
                        .iter()
                        .filter(|s| s.system.key == system.key && s.size == size)
                        .filter_map(pick)
                        .collect();
                    if shares.is_empty() {
                        continue;
                    }
                    let m = |f: fn(&CpuShares) -> f64| {
                        let mut v: Vec<f64> = shares.iter().map(f).collect();
                        median(&mut v).map(number).unwrap_or_else(|| "–".into())
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {size} B | {name} | {} % | {} % | {} % | {} % |",
                        system.key,
                        m(|c| c.generator),
                        m(|c| c.counter),
                        m(|c| c.edge),
                        m(|c| c.destination)
                    );
                }
            }
        }
        out
    }

    /// Every trial that failed, with its error.
    pub fn errors(&self) -> Vec<String> {
        self.samples
            .iter()
            .flat_map(|s| {
                s.errors
                    .iter()
                    .map(move |e| format!("{} {} B run {}: {e}", s.system.key, s.size, s.run + 1))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_cells() {
        assert_eq!(number(182_345.0), "182k");
        assert_eq!(number(64_012.0), "64.0k");
        assert_eq!(number(6.61), "6.61");
        assert_eq!(number(540.2), "540");
        assert_eq!(number(f64::NAN), "–");
        assert_eq!(cell(&[3.0, 1.0, 2.0]), "**2.00** [3.00, 1.00, 2.00]");
        assert_eq!(cell(&[]), "–");
    }
}
