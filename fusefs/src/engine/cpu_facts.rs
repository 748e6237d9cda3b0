//! The CPU side of the engine: usage, throttling and denial for /proc/stat, and the caller's
//! `sys/devices/system/cpu/cpuN` entries.

use std::path::Path;

use cgsight_cgroup::{Controller, ControllerDir, Version};

use super::*;

impl Engine {
    fn cpu_dir<'a>(&self, s: &'a CgState) -> VResult<&'a ControllerDir> {
        need(s, Controller::Cpuacct).or_else(|_| need(s, Controller::Cpu))
    }

    /// A single-value file every cgroup of its controller has.
    pub(super) fn read_u64(&self, s: &CgState, dir: &Path, name: &'static str) -> VResult<u64> {
        // A u64 and its newline fit with room to spare; a file that fills the buffer is not
        // one number, and is read whole so that the parser's error shows it.
        let mut buf = [0u8; 64];
        let cap = buf.len();
        let small = required(s, dir, name, s.files.read_small(dir, name, &mut buf))?;
        let whole;
        let t = if small.len() < cap {
            small
        } else {
            whole = required(s, dir, name, s.files.read(dir, name))?;
            whole.as_str()
        };
        parsed(
            dir,
            format::u64_of(Path::new(name), "an unsigned integer", t),
        )
    }

    /// v2 cpu.stat: usage, user and system ns.
    fn cpu_stat_v2(&self, s: &CgState, dir: &Path) -> VResult<cpu::CpuUsage> {
        let t = required(s, dir, "cpu.stat", s.files.read(dir, "cpu.stat"))?;
        parsed(dir, cpu::parse_stat_v2(Path::new("cpu.stat"), &t)).map(|(u, _)| u)
    }

    pub(super) fn cpu_used_ns(&self, s: &CgState) -> VResult<u64> {
        let d = self.cpu_dir(s)?;
        match d.version {
            Version::V1 => self.read_u64(s, &d.dir, "cpuacct.usage"),
            Version::V2 => self.cpu_stat_v2(s, &d.dir).map(|u| u.total_ns),
        }
    }

    /// User and system ns, per CPU where the kernel has it (v1 cpuacct.usage_all).
    fn cpu_split(&self, s: &CgState) -> VResult<CpuSplit> {
        let d = self.cpu_dir(s)?;
        if d.version == Version::V2 {
            let u = self.cpu_stat_v2(s, &d.dir)?;
            return Ok((u.user_ns, u.system_ns, None));
        }
        match s.files.read(&d.dir, "cpuacct.usage_all") {
            Ok(Some(t)) => {
                let per = parsed(
                    &d.dir,
                    cpu::usage_all(Path::new("cpuacct.usage_all"), &t)
                        .collect::<Result<Vec<_>, _>>(),
                )?;
                let user = per.iter().map(|c| c.user_ns).sum();
                let system = per.iter().map(|c| c.system_ns).sum();
                Ok((user, system, Some(per)))
            }
            // Kernels before 4.7 have no usage_all: cpuacct.stat's ticks.
            Ok(None) => {
                let u = cpu::read_usage(&d.dir, d.version)?;
                Ok((u.user_ns, u.system_ns, None))
            }
            Err(e) => Err(file_err(&d.dir, "cpuacct.usage_all", e)),
        }
    }

    /// What the kernel counted of CPU the container was denied (all 0 where a file is missing:
    /// no quota, or no PSI).
    fn denial(&self, s: &CgState) -> stat::Denial {
        let throttled_ns = need(s, Controller::Cpu)
            .ok()
            .and_then(|d| cpu::read_throttling(&d.dir, d.version).ok())
            .map_or(0, |t| t.throttled_ns);
        let psi = s.cg.unified.as_ref().and_then(|u| {
            let t = s.files.read(u, "cpu.pressure").ok()??;
            // The path only names the file in a parse error, which is discarded here.
            pressure::parse_psi(Path::new("cpu.pressure"), &t).ok()
        });
        ensure_sampled(&s.cg, &s.load);
        let runnable = s.load.lock().unwrap_or_else(|e| e.into_inner()).running;
        stat::Denial {
            throttled_ns,
            runnable,
            // Summed per read so top's 1 s frames see it; a huge container relies on PSI.
            run_delay_ns: cgsight_cgroup::tasks::run_delay_ns(&s.cg, 1024).unwrap_or(0),
            psi_some_ns: psi.as_ref().map_or(0, |p| p.some.total_us * 1000),
            psi_full_ns: psi
                .as_ref()
                .and_then(|p| p.full.as_ref())
                .map_or(0, |f| f.total_us * 1000),
        }
    }

    pub(super) fn stat(&self, r: &Reader, l: &Limits, pid: u32) -> VResult<String> {
        let s = &*r.cg;
        let visible = self.visible(l);
        let (user_ns, system_ns, per) = self.cpu_split(s)?;
        let busy = stat::spread(&visible, per.as_deref(), user_ns, system_ns);
        let age = self.age_ns(r);
        let steal = stat::denied_ns(&self.denial(s), visible.len());
        let ticks = stat::compute(age, &busy, steal);
        let shown = {
            let mut last = s.stat_last.lock().unwrap_or_else(|e| e.into_inner());
            stat::monotonic(&mut last, ticks)
        };
        ensure_sampled(&s.cg, &s.load);
        let procs = {
            let ld = s.load.lock().unwrap_or_else(|e| e.into_inner());
            stat::Procs {
                processes: ld.last_pid,
                running: ld.running,
                blocked: ld.blocked,
            }
        };
        // The caller's own time namespace (its pid in ours): missing without one.
        let offsets = host::read(&format!("/proc/{pid}/timens_offsets"));
        let boot_offset = stat::boottime_offset_secs(&offsets);
        Ok(stat::render(&self.host.stat(), &shown, &procs, boot_offset))
    }

    /// The host CPUs the caller's cpuN directories mirror, in order.
    fn cpu_dir_cpus(&self, pid: u32) -> Vec<u32> {
        let host = || self.host.online().to_vec();
        let Caller::Reader(r) = self.resolver.resolve(pid) else {
            return host();
        };
        match self.limits(&r.cg) {
            Ok(l) if self.is_virtual(&r, &l) => self.visible(&l),
            _ => host(),
        }
    }

    /// A file under the caller's cpu`i`/, or None when it has no such file.
    pub fn cpu_leaf(&self, pid: u32, i: usize, leaf: views::topology::Leaf) -> Option<String> {
        let cpus = self.cpu_dir_cpus(pid);
        let h = *cpus.get(i)?;
        views::topology::render(&self.host.cpu(h), &cpus, i, leaf)
    }

    /// How many cache/indexK/ directories the caller's cpu`i` has.
    pub fn cpu_caches(&self, pid: u32, i: usize) -> usize {
        self.cpu_dir_cpus(pid)
            .get(i)
            .map_or(0, |&h| self.host.cpu(h).caches.len())
    }

    /// The number of cpuN directories the caller sees.
    pub fn cpu_dirs(&self, pid: u32) -> usize {
        let host_n = self.host.online().len();
        let Caller::Reader(r) = self.resolver.resolve(pid) else {
            return host_n;
        };
        match self.limits(&r.cg) {
            Ok(l) if self.is_virtual(&r, &l) => self.visible(&l).len(),
            _ => host_n,
        }
    }
}
