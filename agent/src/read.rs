//! One cgroup's readings through kept-open files ([`crate::files`]): each file is read once per
//! scrape and handed to the cgroup crate's pure parsers; the results are written into the
//! cgroup's [`Stats`] from the previous scrape, so steady-state scrapes reuse its allocations.
//! The semantics (which files are optional, which errors mean "gone") are the cgroup crate's
//! readers' (`cpu::read_limits`, `memory::read`, `io::read`, ...), file for file, except
//! where a method says it reads fewer files; limit files are read through inotify watches
//! ([`slot::is_limit`]).

use std::collections::BTreeMap;
use std::path::Path;

use cgsight_cgroup::cpu::{self, CpuLimits, CpuUsage, Throttling};
use cgsight_cgroup::format::{flat_keyed, limit_of, u64_of};
use cgsight_cgroup::memory::{MemCounters, Memory, MemoryStat, StatKey, StatLines, Swap};
use cgsight_cgroup::oom::OomEvents;
use cgsight_cgroup::pids::Pids;
use cgsight_cgroup::pressure::{self, Pressure, Psi};
use cgsight_cgroup::{io as cgio, Cgroup, ControllerDir, Error, Version};

use crate::files::{CgFiles, Reader};
use crate::parse::psi_totals;

type Result<T> = std::result::Result<T, Error>;

/// Slot numbers of the files a cgroup is read from (one slot per file; a controller is v1 or
/// v2 on a given host, so a slot names one file for the agent's lifetime).
pub mod slot {
    pub const CPU_QUOTA: usize = 0;
    pub const CPU_PERIOD: usize = 1;
    pub const CPU_SHARES: usize = 2;
    pub const CPU_STAT: usize = 3;
    pub const ACCT_USAGE: usize = 4;
    pub const ACCT_ALL: usize = 5;
    pub const ACCT_STAT: usize = 6;
    pub const MEM_USAGE: usize = 7;
    pub const MEM_LIMIT: usize = 8;
    pub const MEM_STAT: usize = 9;
    pub const MEM_PEAK: usize = 10;
    pub const MEM_FAILCNT: usize = 11;
    pub const MEM_EVENTS: usize = 12;
    pub const SWAP_USAGE: usize = 13;
    pub const SWAP_LIMIT: usize = 14;
    pub const OOM_CONTROL: usize = 15;
    pub const CPUSET_EFF: usize = 16;
    pub const PIDS_CUR: usize = 17;
    pub const PIDS_MAX: usize = 18;
    pub const IO_A: usize = 19;
    pub const IO_B: usize = 20;
    pub const PSI_CPU: usize = 21;
    pub const PSI_MEM: usize = 22;
    pub const PSI_IO: usize = 23;
    pub const PROCS_V2: usize = 24;
    pub const PROCS: usize = 25;
    pub const COUNT: usize = 26;

    /// Limit files: read when written (inotify, see `Reader::read_watched`), not each scrape.
    /// Not v2's cpu.weight: a write to cpu.weight.nice changes it too.
    pub fn is_limit(idx: usize, name: &str) -> bool {
        matches!(
            idx,
            CPU_QUOTA | CPU_PERIOD | CPU_SHARES | MEM_LIMIT | SWAP_LIMIT | PIDS_MAX
        ) && name != "cpu.weight"
    }
}

/// A cgroup's reader for one scrape: the shared buffer and this cgroup's files.
pub struct Files<'a> {
    pub r: &'a mut Reader,
    pub cg: &'a mut CgFiles,
}

fn err(dir: &Path, name: &str, source: std::io::Error) -> Error {
    Error::Read {
        path: dir.join(name),
        source,
    }
}

impl Files<'_> {
    /// Text of an optional file (`Ok(None)` when absent).
    fn opt(&mut self, idx: usize, dir: &Path, name: &str) -> Result<Option<&str>> {
        if slot::is_limit(idx, name) {
            self.r.read_watched(self.cg, idx, dir, name)
        } else {
            self.r.read(self.cg, idx, dir, name)
        }
        .map_err(|e| err(dir, name, e))
    }

    /// Text of a file that must exist (absence is ENOENT, i.e. "gone").
    fn req(&mut self, idx: usize, dir: &Path, name: &str) -> Result<&str> {
        self.opt(idx, dir, name)?
            .ok_or_else(|| err(dir, name, std::io::Error::from_raw_os_error(libc::ENOENT)))
    }

    fn u64_req(&mut self, idx: usize, dir: &Path, name: &str) -> Result<u64> {
        let t = self.req(idx, dir, name)?;
        u64_of(Path::new(name), "an unsigned integer", t)
    }

    fn u64_opt(&mut self, idx: usize, dir: &Path, name: &str) -> Result<Option<u64>> {
        match self.opt(idx, dir, name)? {
            Some(t) => u64_of(Path::new(name), "an unsigned integer", t).map(Some),
            None => Ok(None),
        }
    }

    fn limit_req(&mut self, idx: usize, dir: &Path, name: &str) -> Result<Option<u64>> {
        let t = self.req(idx, dir, name)?;
        limit_of(Path::new(name), t)
    }

    fn limit_opt(&mut self, idx: usize, dir: &Path, name: &str) -> Result<Option<Option<u64>>> {
        match self.opt(idx, dir, name)? {
            Some(t) => limit_of(Path::new(name), t).map(Some),
            None => Ok(None),
        }
    }

    /// As `cpu::read_limits`.
    pub fn cpu_limits(&mut self, d: &ControllerDir) -> Result<CpuLimits> {
        use slot::*;
        let dir = &d.dir;
        match d.version {
            Version::V1 => Ok(CpuLimits {
                quota_us: self.limit_req(CPU_QUOTA, dir, "cpu.cfs_quota_us")?,
                period_us: self.u64_req(CPU_PERIOD, dir, "cpu.cfs_period_us")?,
                shares: self.u64_opt(CPU_SHARES, dir, "cpu.shares")?,
                weight: None,
            }),
            Version::V2 => {
                let (quota_us, period_us) = match self.opt(CPU_QUOTA, dir, "cpu.max")? {
                    Some(t) => cpu::parse_cpu_max(Path::new("cpu.max"), t)?,
                    None => (None, 100_000),
                };
                Ok(CpuLimits {
                    quota_us,
                    period_us,
                    shares: None,
                    weight: self.u64_opt(CPU_SHARES, dir, "cpu.weight")?,
                })
            }
        }
    }

    /// v2 `cpu.stat`, as `cpu::read_stat_v2`.
    pub fn cpu_stat_v2(&mut self, dir: &Path) -> Result<(CpuUsage, Throttling)> {
        let t = self.req(slot::CPU_STAT, dir, "cpu.stat")?;
        cpu::parse_stat_v2(Path::new("cpu.stat"), t)
    }

    /// As `cpu::read_usage` (but see below on cpuacct.usage), reusing `prev`'s per-CPU vector.
    pub fn cpu_usage(&mut self, d: &ControllerDir, prev: Option<CpuUsage>) -> Result<CpuUsage> {
        use slot::*;
        let dir = &d.dir;
        if d.version == Version::V2 {
            return self.cpu_stat_v2(dir).map(|(u, _)| u);
        }
        let mut per = prev.and_then(|p| p.per_cpu).unwrap_or_default();
        // With usage_all the per-CPU series are exported instead of the total (never both),
        // so cpuacct.usage is not read: one file less per cgroup. The total is then the sum
        // of what the per-CPU series say.
        if let Some(t) = self.opt(ACCT_ALL, dir, "cpuacct.usage_all")? {
            let mut u = cpu::usage_v1_all(Path::new("cpuacct.usage_all"), 0, t, &mut per)?;
            u.total_ns = u.user_ns + u.system_ns;
            return Ok(u);
        }
        let total_ns = self.u64_req(ACCT_USAGE, dir, "cpuacct.usage")?;
        let t = self.req(ACCT_STAT, dir, "cpuacct.stat")?;
        cpu::usage_v1_stat(Path::new("cpuacct.stat"), total_ns, t)
    }

    /// v1 throttling from the cpu controller's `cpu.stat`, as `cpu::read_throttling`.
    pub fn throttling_v1(&mut self, dir: &Path) -> Result<Throttling> {
        let t = self.req(slot::CPU_STAT, dir, "cpu.stat")?;
        let mut th = Throttling::default();
        for kv in flat_keyed(Path::new("cpu.stat"), t) {
            match kv? {
                ("nr_periods", x) => th.periods = x,
                ("nr_throttled", x) => th.throttled_periods = x,
                ("throttled_time", x) => th.throttled_ns = x,
                _ => {}
            }
        }
        Ok(th)
    }

    /// As `memory::read`, except that memory.stat goes into `counters` (fixed slots, with
    /// `lines` remembering its layout across cgroups) and `Memory::stat`'s map is left empty.
    pub fn memory(
        &mut self,
        d: &ControllerDir,
        counters: &mut MemCounters,
        lines: &mut StatLines,
    ) -> Result<Memory> {
        use slot::*;
        let (dir, v) = (&d.dir, d.version);
        let v1 = v == Version::V1;
        let usage = if v1 {
            self.u64_req(MEM_USAGE, dir, "memory.usage_in_bytes")?
        } else {
            self.u64_req(MEM_USAGE, dir, "memory.current")?
        };
        let limit = if v1 {
            self.limit_req(MEM_LIMIT, dir, "memory.limit_in_bytes")?
        } else {
            self.limit_opt(MEM_LIMIT, dir, "memory.max")?.flatten()
        };
        let t = self.req(MEM_STAT, dir, "memory.stat")?;
        counters.fill(lines, Path::new("memory.stat"), v, t)?;
        let stat = MemoryStat {
            version: Some(v),
            raw: BTreeMap::new(),
        };
        let mut oom = None;
        let (peak, failcnt) = if v1 {
            (
                self.u64_opt(MEM_PEAK, dir, "memory.max_usage_in_bytes")?,
                self.u64_opt(MEM_FAILCNT, dir, "memory.failcnt")?,
            )
        } else {
            let peak = self.u64_opt(MEM_PEAK, dir, "memory.peak")?;
            let mut max = None;
            if let Some(t) = self.opt(MEM_EVENTS, dir, "memory.events")? {
                let mut ev = OomEvents::default();
                for kv in flat_keyed(Path::new("memory.events"), t) {
                    match kv? {
                        ("oom_kill", x) => ev.oom_kill = x,
                        ("oom", x) => ev.oom = Some(x),
                        ("max", x) => max = Some(x),
                        _ => {}
                    }
                }
                oom = Some(ev);
            }
            (peak, max)
        };
        let swap = self.swap(d, limit, counters.hierarchical(StatKey::Swap))?;
        Ok(Memory {
            usage,
            limit,
            peak,
            failcnt,
            oom,
            swap,
            stat,
        })
    }

    /// As `memory::read_swap`, except that v1 swap usage is memory.stat's `total_swap` (as
    /// cAdvisor's), shown exactly when swap is accounted (the memsw files exist): one file
    /// less than memory.memsw.usage_in_bytes minus usage.
    fn swap(
        &mut self,
        d: &ControllerDir,
        limit: Option<u64>,
        total_swap: Option<u64>,
    ) -> Result<Option<Swap>> {
        use slot::*;
        let dir = &d.dir;
        let (used, limits) = match d.version {
            Version::V1 => {
                let Some(swapped) = total_swap else {
                    return Ok(None);
                };
                let limits = self
                    .limit_opt(SWAP_LIMIT, dir, "memory.memsw.limit_in_bytes")?
                    .map(|memsw_limit| {
                        let swap_limit = match (memsw_limit, limit) {
                            (Some(ms), Some(m)) => Some(ms.saturating_sub(m)),
                            (Some(ms), None) => Some(ms),
                            (None, _) => None,
                        };
                        (swap_limit, memsw_limit)
                    });
                (swapped, limits)
            }
            Version::V2 => {
                let Some(used) = self.u64_opt(SWAP_USAGE, dir, "memory.swap.current")? else {
                    return Ok(None);
                };
                let limits = self
                    .limit_opt(SWAP_LIMIT, dir, "memory.swap.max")?
                    .map(|l| (l, None));
                (used, limits)
            }
        };
        let (limit, memsw_limit) = limits.unwrap_or((None, None));
        Ok(Some(Swap {
            usage: used,
            limit,
            memsw_limit,
        }))
    }

    /// v1 `memory.oom_control`'s OOM kills (v2 has them in memory.events, read with memory).
    pub fn oom_kills_v1(&mut self, dir: &Path) -> Result<u64> {
        let t = self.req(slot::OOM_CONTROL, dir, "memory.oom_control")?;
        let mut n = 0;
        for kv in flat_keyed(Path::new("memory.oom_control"), t) {
            if let ("oom_kill", x) = kv? {
                n = x;
            }
        }
        Ok(n)
    }

    /// The CPU count of the cgroup's own effective cpuset; `Ok(None)` when its files are empty
    /// (v1 before `cpuset.cpus` is set), for the caller to ask the ancestors.
    pub fn cpuset_count(&mut self, d: &ControllerDir) -> Result<Option<usize>> {
        use slot::*;
        // v1 (legacy mode) keeps effective_cpus equal to cpus, CPUs going offline aside (their
        // tasks move up), so an empty effective_cpus means an empty cpus: not read.
        let files: &[(usize, &str)] = match d.version {
            Version::V1 => &[(CPUSET_EFF, "cpuset.effective_cpus")],
            Version::V2 => &[(CPUSET_EFF, "cpuset.cpus.effective")],
        };
        for (idx, name) in files {
            if let Some(t) = self.opt(*idx, &d.dir, name)? {
                let n = cgsight_cgroup::CpuList::count(t).ok_or_else(|| {
                    cgsight_cgroup::format::parse_err(Path::new(name), "a CPU list", t)
                })?;
                if n > 0 {
                    return Ok(Some(n));
                }
            }
        }
        Ok(None)
    }

    /// As `pids::read`.
    pub fn pids(&mut self, dir: &Path) -> Result<Pids> {
        let current = self
            .u64_opt(slot::PIDS_CUR, dir, "pids.current")?
            .unwrap_or(0);
        let max = self.limit_opt(slot::PIDS_MAX, dir, "pids.max")?.flatten();
        Ok(Pids { current, max })
    }

    /// As `io::read`, into `out`.
    pub fn io(&mut self, d: &ControllerDir, out: &mut Vec<cgio::IoDevice>) -> Result<()> {
        out.clear();
        match d.version {
            Version::V2 => {
                if let Some(t) = self.opt(slot::IO_A, &d.dir, "io.stat")? {
                    *out = cgio::parse_io_stat(Path::new("io.stat"), t)?;
                }
            }
            Version::V1 => {
                let mut devs = BTreeMap::new();
                for (idx, file, bytes) in [
                    (
                        slot::IO_A,
                        "blkio.throttle.io_service_bytes_recursive",
                        true,
                    ),
                    (slot::IO_B, "blkio.throttle.io_serviced_recursive", false),
                ] {
                    let t = self.req(idx, &d.dir, file)?;
                    cgio::merge_blkio(Path::new(file), t, bytes, &mut devs)?;
                }
                out.extend(devs.into_values());
            }
        }
        Ok(())
    }

    /// As `pressure::read` on the cgroup2 directory.
    pub fn pressure(&mut self, dir: &Path) -> Result<Pressure> {
        let mut one = |idx: usize, name: &str| -> Result<Option<Psi>> {
            match self.opt(idx, dir, name) {
                Ok(Some(t)) => psi_totals(t)
                    .map_or_else(|| pressure::parse_psi(Path::new(name), t), Ok)
                    .map(Some),
                Ok(None) => Ok(None),
                // With psi=0 on the kernel command line the files exist but reads fail.
                Err(Error::Read { source, .. })
                    if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        Ok(Pressure {
            cpu: one(slot::PSI_CPU, "cpu.pressure")?,
            memory: one(slot::PSI_MEM, "memory.pressure")?,
            io: one(slot::PSI_IO, "io.pressure")?,
        })
    }

    /// (processes, first pid) in the cgroup, as `Cgroup::procs` without the vector.
    pub fn procs(&mut self, cg: &Cgroup) -> Result<(usize, Option<i32>)> {
        if let Some(u) = &cg.unified {
            if let Some(t) = self.opt(slot::PROCS_V2, u, "cgroup.procs")? {
                return count_procs(t);
            }
        }
        let Some(d) = cg.dirs.values().next() else {
            return Err(Error::NoController(cgsight_cgroup::Controller::Memory));
        };
        let t = self.req(slot::PROCS, &d.dir, "cgroup.procs")?;
        count_procs(t)
    }
}

fn count_procs(text: &str) -> Result<(usize, Option<i32>)> {
    let (mut n, mut first) = (0, None);
    for l in text.lines().filter(|l| !l.is_empty()) {
        let pid: i32 = l.trim().parse().map_err(|_| {
            cgsight_cgroup::format::parse_err(Path::new("cgroup.procs"), "a pid", l)
        })?;
        first.get_or_insert(pid);
        n += 1;
    }
    Ok((n, first))
}
