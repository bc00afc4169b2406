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
