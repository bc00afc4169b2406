//! Where the interrupts of the disk under the bench directory are handled.
//!
//! A disk's completion interrupts run on the CPUs the kernel routes them
//! to, and take that time from whatever runs there. With
//! `--destination-cpu` that CPU stands for a remote host, which an edge's
//! `fdatasync` never touches; on the 2-vCPU VMs of BENCHMARKS.md every
//! interrupt of the disk goes to CPU 1 (managed affinity: root cannot move
//! it), so with the destination on CPU 1 Backhaul's disk mode paid for its
//! live messages' flushes on the destination's core (BENCHMARKS.md,
//! session 11). The report counts them per CPU, and the bench warns when
//! a CPU of the remote host (`--destination-cpu`, `--subscriber-cpu`) is
//! among those that handle them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The interrupt lines of one block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInterrupts {
    /// The block device's name (`vda`, `nvme0n1`, `sda2`).
    pub device: String,
    irqs: Vec<u32>,
}

impl DiskInterrupts {
    /// The disk holding `dir` and its interrupt lines (MSI vectors, or the
    /// one legacy line), found through `/sys/dev/block`; `None` off Linux,
    /// for a filesystem without a block device (tmpfs, overlay) or a
    /// device without interrupts of its own (loop, zram).
    pub fn of(dir: &Path) -> Option<Self> {
        let dev = std::fs::metadata(dir).ok()?.dev();
        let sys = PathBuf::from(format!(
            "/sys/dev/block/{}:{}",
            libc::major(dev),
            libc::minor(dev)
        ))
        .canonicalize()
        .ok()?;
        let device = sys.file_name()?.to_string_lossy().into_owned();
        let irqs = sys.ancestors().find_map(irqs_of_device)?;
        Some(Self { device, irqs })
    }

    /// Interrupts handled so far, per CPU (index = CPU number).
    pub fn per_cpu(&self) -> Vec<u64> {
        let table = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
        per_cpu(&table, &self.irqs)
    }

    /// The CPUs the kernel delivers these interrupts to now.
    pub fn handled_on(&self) -> Vec<usize> {
        let mut cpus: Vec<usize> = self
            .irqs
            .iter()
            .filter_map(|irq| {
                std::fs::read_to_string(format!("/proc/irq/{irq}/effective_affinity_list")).ok()
            })
            .filter_map(|list| super::placement::parse_cpu_list(list.trim()))
            .flatten()
            .collect();
        cpus.sort_unstable();
        cpus.dedup();
        cpus
    }

    /// What to tell the user when `cpu`, asked for by `flag` as (part of)
    /// the remote host, handles this disk's interrupts; `None` if it does
    /// not.
    pub fn warning(&self, flag: &str, cpu: usize, dir: &Path) -> Option<String> {
        warning(&self.device, &self.handled_on(), flag, cpu, dir)
    }
}

fn warning(
    device: &str,
    handled_on: &[usize],
    flag: &str,
    cpu: usize,
    dir: &Path,
) -> Option<String> {
    handled_on.contains(&cpu).then(|| {
        format!(
            "{flag} {cpu}: the interrupts of {device} (the disk under {}) are handled on \
             CPUs {handled_on:?}, so the edge's disk I/O completes on the destination's core; \
             a CPU outside that list keeps the two apart",
            dir.display()
        )
    })
}

/// The interrupt lines a device directory in sysfs names: its MSI vectors,
/// else its legacy line; `None` where it names none (a partition, a
/// virtio or block layer directory: their parent device has them).
fn irqs_of_device(dir: &Path) -> Option<Vec<u32>> {
    let msi: Vec<u32> = std::fs::read_dir(dir.join("msi_irqs"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    if !msi.is_empty() {
        return Some(msi);
    }
    let legacy: u32 = std::fs::read_to_string(dir.join("irq"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (legacy != 0).then(|| vec![legacy])
}

/// Sums the per-CPU columns of the lines of `irqs` in a `/proc/interrupts`
/// table (its first line names the CPU columns).
fn per_cpu(table: &str, irqs: &[u32]) -> Vec<u64> {
    let mut lines = table.lines();
    let cpus = lines
        .next()
        .map(|header| header.split_whitespace().count())
        .unwrap_or(0);
    let mut sums = vec![0; cpus];
    for line in lines {
        let Some((label, counts)) = line.trim_start().split_once(':') else {
            continue;
        };
        if !label.parse().is_ok_and(|irq: u32| irqs.contains(&irq)) {
            continue;
        }
        for (sum, count) in sums.iter_mut().zip(counts.split_whitespace()) {
            *sum += count.parse::<u64>().unwrap_or(0);
        }
    }
    sums
}

/// `CPU 0: 0, CPU 1: 37,643`: the growth of `after` over `before`.
pub fn describe_growth(before: &[u64], after: &[u64]) -> String {
    after
        .iter()
        .enumerate()
        .map(|(cpu, now)| {
            let grown = now.saturating_sub(before.get(cpu).copied().unwrap_or(0));
            format!("CPU {cpu}: {}", thousands(grown))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "           CPU0       CPU1       \n\
         26:          0         14  IO-APIC   4-edge      ttyS0\n\
         35:          0          1  PCI-MSIX-0000:00:02.0   0-edge      virtio1-config\n\
         36:          5     741467  PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n\
        136:          7          0  PCI-MSIX-0000:00:09.0   0-edge      nvme0q0\n\
        NMI:          0          0   Non-maskable interrupts\n\
        LOC:    1080261    1521770   Local timer interrupts\n";

    #[test]
    fn sums_the_columns_of_the_named_lines_only() {
        assert_eq!(per_cpu(TABLE, &[35, 36]), vec![5, 741_468]);
        assert_eq!(per_cpu(TABLE, &[136]), vec![7, 0]);
        assert_eq!(per_cpu(TABLE, &[6]), vec![0, 0]);
        assert_eq!(per_cpu("", &[36]), Vec::<u64>::new());
    }

    #[test]
    fn growth_is_per_cpu_with_thousands_separated() {
        assert_eq!(
            describe_growth(&[5, 741_467], &[5, 1_779_110]),
            "CPU 0: 0, CPU 1: 1,037,643"
        );
        assert_eq!(describe_growth(&[], &[12]), "CPU 0: 12");
    }

    #[test]
    fn a_remote_cpu_that_handles_the_disk_is_warned_about_by_flag() {
        let dir = Path::new("/var/tmp");
        assert_eq!(
            warning("vda", &[1], "--destination-cpu", 1, dir).as_deref(),
            Some(
                "--destination-cpu 1: the interrupts of vda (the disk under /var/tmp) are \
                 handled on CPUs [1], so the edge's disk I/O completes on the destination's \
                 core; a CPU outside that list keeps the two apart"
            )
        );
        assert_eq!(warning("vda", &[1], "--destination-cpu", 0, dir), None);
        assert!(warning("nvme0n1", &[0, 1], "--subscriber-cpu", 0, dir)
            .is_some_and(|w| w.starts_with("--subscriber-cpu 0: the interrupts of nvme0n1")));
    }

    #[test]
    fn the_disk_under_a_directory_has_interrupt_lines_or_none() {
        // Whatever the machine: a found disk names a device and at least one
        // line, and its counts have one column per CPU of the table.
        if let Some(disk) = DiskInterrupts::of(&std::env::temp_dir()) {
            assert!(!disk.device.is_empty());
            assert!(!disk.irqs.is_empty());
            let table = std::fs::read_to_string("/proc/interrupts").unwrap();
            let columns = table.lines().next().unwrap().split_whitespace().count();
            assert_eq!(disk.per_cpu().len(), columns);
        }
        assert_eq!(DiskInterrupts::of(Path::new("/proc")), None);
    }
}
