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

/// `cpu.max` text: `(quota, period)`, quota None when `max`.
pub fn parse_cpu_max(p: &Path, text: &str) -> Result<(Option<u64>, u64)> {
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
                let mut per = Vec::new();
                return usage_v1_all(&all_path, total_ns, &text, &mut per);
            }
            let sp = join(dir, "cpuacct.stat");
            usage_v1_stat(&sp, total_ns, &parse::read(&sp)?)
        }
        Version::V2 => read_stat_v2(dir).map(|(u, _)| u),
    }
}

/// v1 usage from `cpuacct.usage_all` text, the per-CPU rows collected into `per` (cleared
/// first: a caller may pass last scrape's vector to reuse it).
pub fn usage_v1_all(
    p: &Path,
    total_ns: u64,
    text: &str,
    per: &mut Vec<PerCpu>,
) -> Result<CpuUsage> {
    per.clear();
    for c in usage_all(p, text) {
        per.push(c?);
    }
    let user_ns = per.iter().map(|c| c.user_ns).sum();
    let system_ns = per.iter().map(|c| c.system_ns).sum();
    Ok(CpuUsage {
        total_ns,
        user_ns,
        system_ns,
        per_cpu: Some(std::mem::take(per)),
    })
}

/// v1 usage from `cpuacct.stat` text (USER_HZ ticks), where usage_all is absent.
pub fn usage_v1_stat(p: &Path, total_ns: u64, text: &str) -> Result<CpuUsage> {
    let (mut user, mut system) = (0, 0);
    for kv in parse::flat_keyed(p, text) {
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

/// v2 `cpu.stat` read once: usage and throttling, which v1 keeps in two controllers.
pub fn read_stat_v2(dir: &Path) -> Result<(CpuUsage, Throttling)> {
    let p = join(dir, "cpu.stat");
    let text = parse::read(&p)?;
    parse_stat_v2(&p, &text)
}

/// v2 `cpu.stat` text: usage (µs, converted to ns) and throttling. The three usage keys are
/// in every v2 cgroup's cpu.stat, with or without the cpu controller: one missing means the
/// text is not a whole cpu.stat.
pub fn parse_stat_v2(p: &Path, text: &str) -> Result<(CpuUsage, Throttling)> {
    let (mut u, mut t) = (CpuUsage::default(), Throttling::default());
    let mut seen = 0u8;
    for kv in parse::flat_keyed(p, text) {
        match kv? {
            ("usage_usec", v) => (u.total_ns, seen) = (v.saturating_mul(1000), seen | 1),
            ("user_usec", v) => (u.user_ns, seen) = (v.saturating_mul(1000), seen | 2),
            ("system_usec", v) => (u.system_ns, seen) = (v.saturating_mul(1000), seen | 4),
            ("nr_periods", x) => t.periods = x,
            ("nr_throttled", x) => t.throttled_periods = x,
            ("throttled_usec", x) => t.throttled_ns = x.saturating_mul(1000),
            _ => {}
        }
    }
    if seen != 7 {
        return Err(parse::parse_err(
            p,
            "usage_usec, user_usec and system_usec",
            text,
        ));
    }
    Ok((u, t))
}

/// `cpuacct.usage_all` text (v1, Linux 4.7+): a `cpu user system` header, then one
/// `N user_ns system_ns` line per possible CPU. Lazy, so a caller can sum without collecting.
pub fn usage_all<'a>(p: &'a Path, text: &'a str) -> impl Iterator<Item = Result<PerCpu>> + 'a {
    let mut lines = text.lines();
    let bad_header = lines
        .next()
        .filter(|h| !h.split_ascii_whitespace().eq(["cpu", "user", "system"]))
        .map(|h| Err(parse::parse_err(p, "a `cpu user system` header", h)));
    bad_header
        .into_iter()
        .chain(lines.filter(|l| !l.trim().is_empty()).map(move |line| {
            let mut it = line.split_ascii_whitespace();
            let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
            match (num(it.next()), num(it.next()), num(it.next()), it.next()) {
                (Some(cpu), Some(user_ns), Some(system_ns), None) => {
                    let cpu = u32::try_from(cpu)
                        .map_err(|_| parse::parse_err(p, "a CPU number", line))?;
                    Ok(PerCpu {
                        cpu,
                        user_ns,
                        system_ns,
                    })
                }
                _ => Err(parse::parse_err(p, "a `cpu user system` line", line)),
            }
        }))
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

    const USAGE_ALL: &str = "cpu user system\n0 16137518536 10336932018\n1 5 6\n";

    fn all(text: &str) -> Result<Vec<PerCpu>> {
        usage_all(Path::new("cpuacct.usage_all"), text).collect()
    }

    #[test]
    fn usage_all_samples() {
        let v = all(USAGE_ALL).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1],
            PerCpu {
                cpu: 1,
                user_ns: 5,
                system_ns: 6
            }
        );
        assert_eq!(all("cpu user system\n").unwrap(), vec![]);
        assert_eq!(all("").unwrap(), vec![]);
    }

    #[test]
    fn usage_all_garbage_and_truncation_are_errors() {
        assert!(all("cpu user system\n0 x 1\n").is_err());
        // Cut mid-line.
        assert!(all("cpu user system\n0 16137518536").is_err());
        assert!(all("cpu user system\n0 1 2 3\n").is_err());
        assert!(all("cpu user system\n4294967296 1 2\n").is_err());
        // Not a usage_all at all (cpuacct.stat).
        assert!(all("user 10\nsystem 5\n").is_err());
    }

    #[test]
    fn cpu_stat_v2_and_not_v1() {
        let p = Path::new("cpu.stat");
        let (u, t) = parse_stat_v2(
            p,
            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 5\nnr_throttled 1\nthrottled_usec 7\n",
        )
        .unwrap();
        assert_eq!(
            (u.total_ns, u.user_ns, u.system_ns),
            (3_000_000, 2_000_000, 1_000_000)
        );
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_ns),
            (5, 1, 7000)
        );
        // v1's cpu.stat has only throttling: not a v2 cpu.stat.
        assert!(parse_stat_v2(p, "nr_periods 10\nnr_throttled 2\nthrottled_time 12345\n").is_err());
        assert!(parse_stat_v2(p, "usage_usec 3000\nuser_usec").is_err());
        assert!(parse_stat_v2(p, "").is_err());
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
