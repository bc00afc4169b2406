//! The machine and versions a run was measured on, for the report's
//! header: figures from a shared 2-vCPU VM mean little without them.

use std::path::Path;
use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The TCP congestion control every loopback connection of the run gets,
/// and the default queueing discipline. With BBR and no `fq` the kernel
/// paces each socket's segments itself, with a timer per socket: on the
/// nested VM of session 12 both systems replayed 7–17 % faster under CUBIC
/// (BENCHMARKS.md), so a figure means little without it.
fn tcp_row(congestion_control: &str, default_qdisc: &str) -> String {
    match (congestion_control.trim(), default_qdisc.trim()) {
        ("", _) => "unknown".into(),
        (cc, "") => cc.into(),
        (cc, qdisc) => format!("{cc} (default qdisc {qdisc})"),
    }
}

/// What an idle CPU does. Where idle vCPUs halt at once (`haltpoll` with
/// `guest_halt_poll_ns` 0) every wake-up of a task there takes an
/// inter-processor interrupt; with polling on, session 12's VM took 95 %
/// fewer during a replay without moving the gap between the edges
/// (BENCHMARKS.md), so the row says which kind of machine a run had.
fn idle_row(driver: &str, halt_poll_ns: &str) -> String {
    let driver = match driver.trim() {
        "" => "unknown",
        d => d,
    };
    match halt_poll_ns.trim() {
        "" => format!("cpuidle {driver}"),
        ns => format!("cpuidle {driver}, halt polling {ns} ns"),
    }
}

/// `| item | value |` rows describing this machine, the disk under `dir`,
/// and the versions of what was measured.
pub fn describe(dir: &Path, backhaul: &Path) -> Vec<(String, String)> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    // The second line of `df`: the header is the first.
    let disk = Command::new("df")
        .args(["-h", "--output=source,fstype,size,avail"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    let load = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let backhaul_version =
        output(&backhaul.display().to_string(), &["--version"]).unwrap_or_default();
    let mosquitto = ["/usr/sbin/mosquitto", "mosquitto"]
        .iter()
        .find_map(|m| output(m, &["-h"]))
        .unwrap_or_default();
    vec![
        (
            "date (UTC)".into(),
            output("date", &["-u", "+%Y-%m-%d %H:%M"]).unwrap_or_default(),
        ),
        ("CPUs (nproc)".into(), format!("{cpus} × {cpu_model}")),
        ("memory".into(), mem_gib),
        (
            "kernel".into(),
            output("uname", &["-r"]).unwrap_or_default(),
        ),
        (
            format!("disk under {}", dir.display()),
            format!("{disk} (source, type, size, free)"),
        ),
        ("load average at start (1, 5, 15 min)".into(), load),
        (
            "TCP congestion control".into(),
            tcp_row(
                &read("/proc/sys/net/ipv4/tcp_congestion_control"),
                &read("/proc/sys/net/core/default_qdisc"),
            ),
        ),
        (
            "idle CPUs".into(),
            idle_row(
                &read("/sys/devices/system/cpu/cpuidle/current_driver"),
                &read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
            ),
        ),
        (
            "Backhaul".into(),
            format!("{backhaul_version} ({})", backhaul.display()),
        ),
        ("Mosquitto".into(), mosquitto),
        (
            "rustc".into(),
            output("rustc", &["--version"]).unwrap_or_default(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_congestion_control_row_names_the_qdisc_when_known() {
        assert_eq!(
            tcp_row("bbr\n", "pfifo_fast\n"),
            "bbr (default qdisc pfifo_fast)"
        );
        assert_eq!(tcp_row("cubic\n", ""), "cubic");
        assert_eq!(tcp_row("", "fq"), "unknown");
    }

    #[test]
    fn the_idle_row_gives_the_halt_polling_only_where_the_driver_has_it() {
        assert_eq!(
            idle_row("haltpoll\n", "0\n"),
            "cpuidle haltpoll, halt polling 0 ns"
        );
        assert_eq!(idle_row("intel_idle\n", ""), "cpuidle intel_idle");
        assert_eq!(idle_row("", ""), "cpuidle unknown");
    }

    #[test]
    fn this_machine_is_described_with_both_rows() {
        let rows = describe(Path::new("/tmp"), Path::new("/nonexistent/backhaul"));
        let tcp = rows.iter().find(|(k, _)| k == "TCP congestion control");
        let expected = read("/proc/sys/net/ipv4/tcp_congestion_control");
        let (_, value) = tcp.expect("a TCP congestion control row");
        assert!(value.starts_with(expected.trim()), "{value} vs {expected}");
        assert!(rows
            .iter()
            .any(|(k, v)| k == "idle CPUs" && v.starts_with("cpuidle ")));
    }
}
