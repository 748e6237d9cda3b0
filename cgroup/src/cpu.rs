//! CPU: quota/period (`cpu.cfs_*` or `cpu.max`), shares or weight, usage, throttling.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::layout::Version;
use crate::parse::{self, join};

/// Kernel USER_HZ, the unit of v1 `cpuacct.stat`; 100 on every Linux ABI cgsight targets.
pub const USER_HZ: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CpuLimits {
    /// None = unlimited.
    pub quota_us: Option<u64>,
    pub period_us: u64,
    /// v1 cpu.shares (default 1024).
    pub shares: Option<u64>,
    /// v2 cpu.weight (default 100).
    pub weight: Option<u64>,
}

impl CpuLimits {
    /// The quota in CPUs (1.5 for 150000/100000), None when unlimited.
    pub fn cpus(&self) -> Option<f64> {
        match self.quota_us {
            Some(q) if self.period_us > 0 => Some(q as f64 / self.period_us as f64),
            _ => None,
        }
    }

    /// Shares in v1 units; v2 weight converted the way cAdvisor and runc do.
    pub fn shares_v1(&self) -> Option<u64> {
        self.shares.or_else(|| {
            self.weight
                .map(|w| 2 + (w.saturating_sub(1)) * 262142 / 9999)
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PerCpu {
    pub cpu: u32,
    pub user_ns: u64,
    pub system_ns: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuUsage {
    pub total_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// v1 only (`cpuacct.usage_all`); v2 has no per-CPU accounting.
    pub per_cpu: Option<Vec<PerCpu>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

pub fn read_limits(dir: &Path, v: Version) -> Result<CpuLimits> {
    match v {
        Version::V1 => {
            let quota = parse::read(&join(dir, "cpu.cfs_quota_us"))?;
            let quota_us = parse::limit_of(&join(dir, "cpu.cfs_quota_us"), &quota)?;
            Ok(CpuLimits {
                quota_us,
                period_us: parse::read_u64(&join(dir, "cpu.cfs_period_us"))?,
                shares: parse::read_u64_opt(&join(dir, "cpu.shares"))?,
                weight: None,
            })
        }
        Version::V2 => {
            let p = join(dir, "cpu.max");
            let (quota_us, period_us) = match parse::read_opt(&p)? {
                Some(text) => parse_cpu_max(&p, &text)?,
                // The root has no cpu.max: unlimited with the default period.
                None => (None, 100_000),
            };
            Ok(CpuLimits {
                quota_us,
                period_us,
                shares: None,
                weight: parse::read_u64_opt(&join(dir, "cpu.weight"))?,
            })
        }
    }
}

pub(crate) fn parse_cpu_max(p: &Path, text: &str) -> Result<(Option<u64>, u64)> {
    let mut it = text.split_ascii_whitespace();
    let (Some(q), Some(per), None) = (it.next(), it.next(), it.next()) else {
        return Err(parse::parse_err(p, "`quota period`", text));
    };
    let quota = parse::limit_of(p, q)?;
    let period = parse::u64_of(p, "a period", per)?;
    Ok((quota, period))
}

/// Usage of the cgroup. On v1 `dir` is the cpuacct directory; on v2 the cgroup directory.
pub fn read_usage(dir: &Path, v: Version) -> Result<CpuUsage> {
    match v {
        Version::V1 => {
            let total_ns = parse::read_u64(&join(dir, "cpuacct.usage"))?;
            // usage_all has ns resolution per CPU; cpuacct.stat is in 10 ms ticks. Prefer the former.
            let all_path = join(dir, "cpuacct.usage_all");
            if let Some(text) = parse::read_opt(&all_path)? {
                let per = parse_usage_all(&all_path, &text)?;
                let user_ns = per.iter().map(|c| c.user_ns).sum();
                let system_ns = per.iter().map(|c| c.system_ns).sum();
                return Ok(CpuUsage {
                    total_ns,
                    user_ns,
                    system_ns,
                    per_cpu: Some(per),
                });
            }
            let sp = join(dir, "cpuacct.stat");
            let text = parse::read(&sp)?;
            let (mut user, mut system) = (0, 0);
            for kv in parse::flat_keyed(&sp, &text) {
                match kv? {
                    ("user", v) => user = v,
                    ("system", v) => system = v,
                    _ => {}
                }
            }
            let tick = 1_000_000_000 / USER_HZ;
            Ok(CpuUsage {
                total_ns,
                user_ns: user * tick,
                system_ns: system * tick,
                per_cpu: None,
            })
        }
        Version::V2 => read_stat_v2(dir).map(|(u, _)| u),
    }
}

/// v2 `cpu.stat` read once: usage and throttling, which v1 keeps in two controllers.
pub fn read_stat_v2(dir: &Path) -> Result<(CpuUsage, Throttling)> {
    let p = join(dir, "cpu.stat");
    let text = parse::read(&p)?;
    let (mut u, mut t) = (CpuUsage::default(), Throttling::default());
    for kv in parse::flat_keyed(&p, &text) {
        match kv? {
            ("usage_usec", v) => u.total_ns = v * 1000,
            ("user_usec", v) => u.user_ns = v * 1000,
            ("system_usec", v) => u.system_ns = v * 1000,
            ("nr_periods", x) => t.periods = x,
            ("nr_throttled", x) => t.throttled_periods = x,
            ("throttled_usec", x) => t.throttled_ns = x * 1000,
            _ => {}
        }
    }
    Ok((u, t))
}

fn parse_usage_all(p: &Path, text: &str) -> Result<Vec<PerCpu>> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_ascii_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(cpu)), Some(Ok(user_ns)), Some(Ok(system_ns))) => out.push(PerCpu {
                cpu: cpu as u32,
                user_ns,
                system_ns,
            }),
            _ => return Err(parse::parse_err(p, "a `cpu user system` line", line)),
        }
    }
    Ok(out)
}

/// Throttling from `cpu.stat` (v1: the cpu controller's directory).
pub fn read_throttling(dir: &Path, v: Version) -> Result<Throttling> {
    if v == Version::V2 {
        return read_stat_v2(dir).map(|(_, t)| t);
    }
    let p = join(dir, "cpu.stat");
    let text = parse::read(&p)?;
    let mut t = Throttling::default();
    for kv in parse::flat_keyed(&p, &text) {
        match kv? {
            ("nr_periods", x) => t.periods = x,
            ("nr_throttled", x) => t.throttled_periods = x,
            ("throttled_time", x) => t.throttled_ns = x,
            _ => {}
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_cpu_stat_gives_usage_and_throttling_in_one_read() {
        let d = std::env::temp_dir().join(format!("cgsight-test-cpustat-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("cpu.stat"),
            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 50\nnr_throttled 7\nthrottled_usec 900\nnr_bursts 0\n",
        )
        .unwrap();
        std::fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        let (u, t) = read_stat_v2(&d).unwrap();
        let ev = crate::oom::read_events_v2(&d).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(
            (u.total_ns, u.user_ns, u.system_ns),
            (3_000_000, 2_000_000, 1_000_000)
        );
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_ns),
            (50, 7, 900_000)
        );
        let (oom, max) = ev.expect("memory.events is there");
        assert_eq!((oom.oom_kill, oom.oom, max), (2, Some(3), Some(12)));
    }

    #[test]
    fn cpu_max_forms() {
        let p = Path::new("cpu.max");
        assert_eq!(parse_cpu_max(p, "max 100000\n").unwrap(), (None, 100000));
        assert_eq!(
            parse_cpu_max(p, "150000 100000\n").unwrap(),
            (Some(150000), 100000)
        );
        assert!(parse_cpu_max(p, "150000\n").is_err());
    }

    #[test]
    fn usage_all() {
        let p = Path::new("cpuacct.usage_all");
        let v = parse_usage_all(p, "cpu user system\n0 16137518536 10336932018\n1 5 6\n").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1],
            PerCpu {
                cpu: 1,
                user_ns: 5,
                system_ns: 6
            }
        );
        assert!(parse_usage_all(p, "cpu user system\n0 x 1\n").is_err());
    }

    #[test]
    fn weight_to_shares() {
        let l = CpuLimits {
            quota_us: None,
            period_us: 100000,
            shares: None,
            weight: Some(100),
        };
        assert_eq!(l.shares_v1(), Some(2 + 99 * 262142 / 9999));
        let l = CpuLimits {
            quota_us: Some(50000),
            period_us: 100000,
            shares: Some(512),
            weight: None,
        };
        assert_eq!(l.cpus(), Some(0.5));
        assert_eq!(l.shares_v1(), Some(512));
    }
}
