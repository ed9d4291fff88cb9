//! Node metrics: a sysinfo-backed [`Sampler`] that turns the machine's state into named series
//! (`cpu.total`, `mem.used`, `net.eth0.rx_bytes_per_s`, …), and bounded in-memory [`Rings`] of recent
//! values with summaries over any window.

mod rings;

use std::time::Instant;

use anyhow::Context as _;
use sysinfo::{Components, Disks, Networks, System};

pub(crate) use rings::Rings;

/// The series families, as `GET /api/v1/node/metrics?series=` names them.
pub(crate) const FAMILIES: [&str; 8] = [
    "cpu",
    "load",
    "mem",
    "swap",
    "disk",
    "net",
    "temp",
    "speedtest",
];

/// One sample of the node: every series with its value.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeSample {
    pub(crate) values: Vec<(String, f64)>,
}

impl NodeSample {
    pub(crate) fn get(&self, series: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(name, _)| name == series)
            .map(|(_, v)| *v)
    }
}

/// Reads the machine's state. Keeps the sysinfo handles between samples so that CPU usage and
/// network rates are measured over the sampling period, and refreshes only what it reports.
pub(crate) struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    last: Instant,
}

impl Sampler {
    pub(crate) fn new() -> anyhow::Result<Sampler> {
        let mut system = System::new().context("Failed to read system information")?;
        system.refresh_cpu_usage();
        Ok(Sampler {
            system,
            disks: Disks::new_with_refreshed_list().context("Failed to list disks")?,
            networks: Networks::new_with_refreshed_list()
                .context("Failed to list network interfaces")?,
            components: Components::new_with_refreshed_list().context("Failed to list sensors")?,
            last: Instant::now(),
        })
    }

    /// Samples every series. CPU usage and network rates cover the time since the previous call.
    pub(crate) fn sample(&mut self) -> NodeSample {
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(false);

        let mut values: Vec<(String, f64)> = Vec::with_capacity(32);
        values.push((
            "cpu.total".into(),
            f64::from(self.system.global_cpu_usage()),
        ));
        for (i, cpu) in self.system.cpus().iter().enumerate() {
            values.push((format!("cpu.core.{i}"), f64::from(cpu.usage())));
        }
        if let Ok(load) = System::load_average() {
            values.extend([
                ("load.1".into(), load.one),
                ("load.5".into(), load.five),
                ("load.15".into(), load.fifteen),
            ]);
        }
        let mem = [
            ("mem.total", self.system.total_memory()),
            ("mem.used", self.system.used_memory()),
            ("mem.available", self.system.available_memory()),
            ("swap.total", self.system.total_swap()),
            ("swap.used", self.system.used_swap()),
        ];
        values.extend(mem.into_iter().map(|(k, v)| (k.to_string(), v as f64)));
        if let Ok(uptime) = System::uptime() {
            values.push(("uptime.seconds".into(), uptime as f64));
        }
        let mut mounts: Vec<String> = Vec::new();
        for disk in self.disks.iter().filter(|d| d.total_space() > 0) {
            let mount = disk.mount_point().display().to_string();
            if mounts.contains(&mount) {
                continue;
            }
            let (total, used) = (
                disk.total_space() as f64,
                disk.total_space().saturating_sub(disk.available_space()) as f64,
            );
            values.push((format!("disk.{mount}.total"), total));
            values.push((format!("disk.{mount}.used"), used));
            values.push((format!("disk.{mount}.used_pct"), 100.0 * used / total));
            mounts.push(mount);
        }
        let mut interfaces: Vec<_> = self
            .networks
            .iter()
            .filter(|(name, _)| name.as_os_str() != "lo")
            .collect();
        interfaces.sort_by(|a, b| a.0.cmp(b.0));
        for (name, data) in interfaces {
            let name = name.to_string_lossy();
            values.push((
                format!("net.{name}.rx_bytes_per_s"),
                data.received() as f64 / elapsed,
            ));
            values.push((
                format!("net.{name}.tx_bytes_per_s"),
                data.transmitted() as f64 / elapsed,
            ));
        }
        for component in self.components.iter() {
            if let Some(celsius) = component.temperature().filter(|t| t.is_finite()) {
                let label: String = component
                    .label()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                values.push((format!("temp.{label}"), f64::from(celsius)));
            }
        }
        NodeSample { values }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_agree_with_the_kernel() {
        let mut sampler = Sampler::new().expect("sampler");
        let sample = sampler.sample();
        let cores = sample
            .values
            .iter()
            .filter(|(k, _)| k.starts_with("cpu.core."))
            .count();
        let online = std::thread::available_parallelism().expect("cores").get();
        assert_eq!(cores, online, "one series per core");
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("MemTotal");
        assert_eq!(sample.get("mem.total"), Some(kib * 1024.0));
        let used = sample.get("mem.used").expect("mem.used");
        assert!(used > 0.0 && used < kib * 1024.0);
        assert!(sample.get("uptime.seconds").is_some_and(|u| u > 0.0));
        assert!(sample.get("load.1").is_some_and(|l| l >= 0.0));
        let cpu = sample.get("cpu.total").expect("cpu");
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        assert!(sample.values.iter().any(|(k, v)| k.starts_with("disk.")
            && k.ends_with(".used_pct")
            && (0.0..=100.0).contains(v)));
    }
}
