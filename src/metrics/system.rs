//! Host metrics, as TorchServe's `ts/metrics/system_metrics.py` computes them with psutil, read
//! here from `/proc/stat`, `/proc/meminfo` and `statvfs("/")`: CPU and memory utilisation, memory
//! used/available (MB), disk used/available (GB) and utilisation. [`start_sampler`] reads them at
//! startup and then every `metric_time_interval` seconds. With GPUs in use, each sample also
//! reads every GPU's utilisation, memory utilisation and memory used (MB) from `nvidia-smi`, as
//! TorchServe reads them through PyTorch (`GPUUtilization`, `GPUMemoryUtilization`,
//! `GPUMemoryUsed`, by `DeviceId`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Metrics;
use crate::gpu::GpuReading;

/// One reading of the host.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemSample {
    pub cpu_utilization: f64,
    pub memory_used: f64,
    pub memory_available: f64,
    pub memory_utilization: f64,
    pub disk_usage: f64,
    pub disk_utilization: f64,
    pub disk_available: f64,
    /// Each GPU in use, by CUDA device number (empty without GPUs).
    pub gpus: Vec<(u32, GpuReading)>,
}

/// Cumulative CPU time from `/proc/stat`'s `cpu` line: (busy, total) in ticks, as psutil counts
/// them (iowait is idle; guest time is already inside user time).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

const MB: f64 = 1024.0 * 1024.0;
const GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    let total = fields.iter().take(8).sum::<u64>();
    let idle = field(3) + field(4);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// psutil's `cpu_percent()`: busy share of the time between two readings, one decimal.
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = after.busy.saturating_sub(before.busy).min(total);
    round1(busy as f64 / total as f64 * 100.0)
}

/// psutil's `virtual_memory()` from `/proc/meminfo`: (used MB, available MB, percent).
pub fn parse_memory(meminfo: &str) -> Option<(f64, f64, f64)> {
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal")?;
    let free = field("MemFree").unwrap_or(0);
    let available = field("MemAvailable").unwrap_or(free);
    let cached = field("Cached").unwrap_or(0) + field("SReclaimable").unwrap_or(0);
    let buffers = field("Buffers").unwrap_or(0);
    let used = match total.checked_sub(free + cached + buffers) {
        Some(used) => used,
        None => total.saturating_sub(free),
    };
    let percent = if total == 0 {
        0.0
    } else {
        round1(total.saturating_sub(available) as f64 / total as f64 * 100.0)
    };
    Some((used as f64 / MB, available as f64 / MB, percent))
}

/// psutil's `disk_usage(path)`: (used GB, available GB, percent of what users may use).
pub fn disk_usage(path: &Path) -> Option<(f64, f64, f64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let total = stat.f_blocks * stat.f_frsize;
    let free_to_root = stat.f_bfree * stat.f_frsize;
    let free_to_users = stat.f_bavail * stat.f_frsize;
    let used = total.saturating_sub(free_to_root);
    let usable = used + free_to_users;
    let percent = if usable == 0 {
        0.0
    } else {
        round1(used as f64 / usable as f64 * 100.0)
    };
    Some((used as f64 / GB, free_to_users as f64 / GB, percent))
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn read_cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Reads the host; CPU use is measured since `previous` (the last reading). Blocking (procfs and
/// statvfs are quick, but this still runs off the async threads).
fn sample(previous: CpuTimes, gpus: usize) -> (Option<SystemSample>, CpuTimes) {
    let now = read_cpu_times().unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_memory(&text));
    let disk = disk_usage(Path::new("/"));
    let sample = match (memory, disk) {
        (Some(memory), Some(disk)) => Some(SystemSample {
            cpu_utilization: cpu_percent(previous, now),
            memory_used: memory.0,
            memory_available: memory.1,
            memory_utilization: memory.2,
            disk_usage: disk.0,
            disk_utilization: disk.2,
            disk_available: disk.1,
            gpus: match gpus {
                0 => Vec::new(),
                _ => crate::gpu::readings().into_iter().take(gpus).collect(),
            },
        }),
        _ => None,
    };
    (sample, now)
}

/// Samples the host now (before the server answers anything: the first CPU figure is the
/// average since boot, where psutil would report a meaningless 0.0), then spawns the task that
/// samples again every `interval` until `stop` turns true (or its sender is dropped).
/// `gpus`: how many GPUs the server uses (their figures are sampled too).
pub async fn start_sampler(
    metrics: Arc<Metrics>,
    interval: Duration,
    gpus: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let first = tokio::task::spawn_blocking(move || sample(CpuTimes::default(), gpus)).await;
    let mut previous = match first {
        Ok((reading, now)) => {
            record(&metrics, reading);
            now
        }
        Err(_) => CpuTimes::default(),
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let Ok((reading, now)) =
                tokio::task::spawn_blocking(move || sample(previous, gpus)).await
            else {
                return;
            };
            previous = now;
            record(&metrics, reading);
        }
    })
}

fn record(metrics: &Metrics, reading: Option<SystemSample>) {
    match reading {
        Some(reading) => metrics.record_system(&reading),
        None => tracing::debug!("cannot read the host's memory or disk figures"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_share_counts_iowait_as_idle() {
        let before =
            parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n").expect("cpu line");
        let after = parse_cpu_times("cpu  200 0 200 850 150 0 0 0 0 0\n").expect("cpu line");
        // busy +200 of +400 ticks
        assert_eq!(cpu_percent(before, after), 50.0);
        assert_eq!(cpu_percent(after, after), 0.0);
    }

    #[test]
    fn memory_is_psutils() {
        let meminfo = "MemTotal:       1000000 kB\nMemFree:         200000 kB\nMemAvailable:    600000 kB\nBuffers:          50000 kB\nCached:          250000 kB\nSReclaimable:     50000 kB\n";
        let (used, available, percent) = parse_memory(meminfo).expect("meminfo");
        assert_eq!(used, 450000.0 / 1024.0);
        assert_eq!(available, 600000.0 / 1024.0);
        assert_eq!(percent, 40.0);
    }

    #[test]
    fn the_root_disk_can_be_read() {
        let (used, available, percent) = disk_usage(Path::new("/")).expect("statvfs /");
        assert!(used >= 0.0 && available >= 0.0 && (0.0..=100.0).contains(&percent));
    }
}
