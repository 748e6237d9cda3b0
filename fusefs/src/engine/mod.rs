//! Per request: who is reading, what their container's cgroup says, and the rendered file.
//!
//! A reader whose container has nothing to virtualize (host pid namespace and no memory limit,
//! CPU quota or narrowed cpuset) gets the host file byte for byte. A view that fails falls back
//! to the host file, counts `cgsight_fs_fallbacks_total{file,reason}` and logs why (at most
//! once a minute per cgroup).

mod cpu_facts;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgsight_cgroup::cpu::{self, PerCpu};
use cgsight_cgroup::memory::{MemCounters, MemoryStat};
use cgsight_cgroup::{format, io, pressure, Controller, ControllerDir, Version};

use crate::catalogue::File;
use crate::host::{self, Host};
use crate::load::{ensure_sampled, sample_into};
use crate::metrics::FsMetrics;
use crate::resolve::{Caller, CgState, Limits, Reader, Resolver, LIMITS_TTL};
use crate::views::{self, meminfo, stat};
use crate::CpuView;

/// Why a view failed (the `reason` label).
#[derive(Debug)]
pub struct ViewError {
    pub reason: &'static str,
    pub detail: String,
}

fn err(reason: &'static str, detail: impl std::fmt::Display) -> ViewError {
    ViewError {
        reason,
        detail: detail.to_string(),
    }
}

/// The `reason` label of a view that failed for want of file descriptors.
const FD_EXHAUSTION: &str = "fd_exhaustion";

impl From<cgsight_cgroup::Error> for ViewError {
    fn from(e: cgsight_cgroup::Error) -> Self {
        let reason = if e.is_fd_exhaustion() {
            FD_EXHAUSTION
        } else if e.is_gone() {
            "cgroup_gone"
        } else {
            "cgroup_read"
        };
        err(reason, e)
    }
}

type VResult<T> = Result<T, ViewError>;

/// User ns, system ns, and per CPU where the kernel splits it.
type CpuSplit = (u64, u64, Option<Vec<PerCpu>>);

pub struct Engine {
    pub resolver: Resolver,
    pub host: Host,
    pub cpu_view: CpuView,
    pub metrics: Arc<FsMetrics>,
    clk_tck: u64,
    /// Last descriptor-exhaustion warning (seconds on the resolver's epoch + 1; 0 = never).
    exhaustion_logged: AtomicU64,
}

fn file_err(dir: &Path, name: &str, e: std::io::Error) -> ViewError {
    let reason = if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
        FD_EXHAUSTION
    } else if e.kind() == std::io::ErrorKind::InvalidData {
        "cgroup_parse"
    } else {
        "cgroup_read"
    };
    err(reason, format!("{}/{name}: {e}", dir.display()))
}

/// A cgroup parser's verdict on text read from `dir`: its error says which file and why
/// (the parsers name the file; `dir` places it).
fn parsed<T>(dir: &Path, r: cgsight_cgroup::Result<T>) -> VResult<T> {
    r.map_err(|e| err("cgroup_parse", format!("{}: {e}", dir.display())))
}

/// A file every cgroup of this controller has: missing means the cgroup is gone.
fn required<T>(s: &CgState, dir: &Path, name: &str, r: std::io::Result<Option<T>>) -> VResult<T> {
    match r {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(err(
            "cgroup_gone",
            format!("{}: {}/{name} is gone", s.cg.path, dir.display()),
        )),
        Err(e) => Err(file_err(dir, name, e)),
    }
}

/// The cgroup's memory.stat text (meminfo and vmstat parse it each their own way).
fn memory_stat(s: &CgState, d: &ControllerDir) -> VResult<String> {
    required(
        s,
        &d.dir,
        "memory.stat",
        s.files.read(&d.dir, "memory.stat"),
    )
}

fn need(s: &CgState, c: Controller) -> VResult<&ControllerDir> {
    s.cg.dir(c).ok_or_else(|| {
        err(
            "no_controller",
            format!("no {c} controller for {}", s.cg.path),
        )
    })
}

impl Engine {
    pub fn new(resolver: Resolver, cpu_view: CpuView, metrics: Arc<FsMetrics>) -> Engine {
        Engine {
            resolver,
            host: Host::open(),
            cpu_view,
            metrics,
            clk_tck: host::clk_tck(),
            exhaustion_logged: AtomicU64::new(0),
        }
    }

    /// The file's contents for the caller `pid`. Never panics (belt and braces: a panic in a
    /// view is caught and served as the host file).
    pub fn generate(&self, f: File, pid: u32) -> Vec<u8> {
        let t0 = Instant::now();
        let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.view(f, pid)))
        {
            Ok(v) => v,
            Err(_) => {
                self.metrics.fallback(f, "panic");
                tracing::error!(file = f.label(), "view panicked; served the host file");
                self.host.read(f.host_path())
            }
        };
        self.metrics.observe(f, t0.elapsed());
        out.into_bytes()
    }

    fn view(&self, f: File, pid: u32) -> String {
        let mut caller = self.resolver.resolve(pid);
        if matches!(caller, Caller::NoFds) {
            self.out_of_fds();
            caller = self.resolver.resolve(pid);
        }
        let r = match caller {
            Caller::Host => return self.host.read(f.host_path()),
            Caller::NoFds => {
                self.metrics.fallback(f, FD_EXHAUSTION);
                return self.host.read(f.host_path());
            }
            Caller::Reader(r) => r,
        };
        let mut rendered = self.render(f, &r, pid);
        if matches!(&rendered, Err(e) if e.reason == FD_EXHAUSTION) {
            self.out_of_fds();
            rendered = self.render(f, &r, pid);
        }
        match rendered {
            Ok(Some(s)) => s,
            Ok(None) => self.host.read(f.host_path()),
            Err(e) => {
                self.metrics.fallback(f, e.reason);
                let now = self.resolver.now_secs() + 1;
                let last = r.cg.last_logged.load(Ordering::Relaxed);
                if last == 0 || now.saturating_sub(last) >= 60 {
                    r.cg.last_logged.store(now, Ordering::Relaxed);
                    tracing::warn!(
                        cgroup = %r.cg.cg.path,
                        file = f.label(),
                        reason = e.reason,
                        "view failed, serving the host file: {}",
                        e.detail
                    );
                }
                self.host.read(f.host_path())
            }
        }
    }

    /// Descriptors ran out: free cached ones (least recently read first) so the retry that
    /// follows can succeed, and say so at most every 10 s (the per-cgroup log would be silent
    /// when the caller could not even be resolved).
    fn out_of_fds(&self) {
        let freed = self.resolver.evict_lru();
        let now = self.resolver.now_secs() + 1;
        let last = self.exhaustion_logged.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= 10 {
            self.exhaustion_logged.store(now, Ordering::Relaxed);
            tracing::warn!(
                closed_files_of = freed,
                "out of file descriptors (EMFILE/ENFILE): closed cached cgroup files and thread \
                 pidfds and retried; views that still fail serve the host file \
                 (cgsight_fs_fallbacks_total{{reason=\"fd_exhaustion\"}})"
            );
        }
    }

    /// Limits, cached per cgroup for a second.
    fn limits(&self, s: &CgState) -> VResult<Arc<Limits>> {
        {
            let l = s.limits.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, v)) = l.as_ref() {
                if at.elapsed() < LIMITS_TTL {
                    return Ok(v.clone());
                }
            }
        }
        let cg = &s.cg;
        let mem = match cg.dir(Controller::Memory) {
            Some(_) => cg.effective_memory_limit()?,
            None => None,
        };
        let swap = match cg.dir(Controller::Memory) {
            Some(_) => cg.effective_swap_limit()?,
            None => None,
        };
        let quota = match cg.dir(Controller::Cpu) {
            Some(_) => cg.effective_cpu_quota()?,
            None => None,
        };
        let online = self.host.online();
        let cpuset = match cg.dir(Controller::Cpuset) {
            Some(_) => {
                let set = cg.cpuset()?.cpus;
                let v: Vec<u32> = set
                    .cpus()
                    .iter()
                    .copied()
                    .filter(|c| online.contains(c))
                    .collect();
                if v.is_empty() {
                    online.to_vec()
                } else {
                    v
                }
            }
            None => online.to_vec(),
        };
        let v = Arc::new(Limits {
            mem,
            swap,
            quota,
            cpuset,
        });
        *s.limits.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), v.clone()));
        Ok(v)
    }

    /// True when the container has something to virtualize.
    fn is_virtual(&self, r: &Reader, l: &Limits) -> bool {
        if !r.host_pidns {
            return true;
        }
        let host_mem = self.host.mem_total_bytes();
        let mem_limited = matches!(l.mem, Some(m) if host_mem == 0 || m < host_mem);
        mem_limited || l.quota.is_some() || l.cpuset.len() < self.host.online().len()
    }

    fn visible(&self, l: &Limits) -> Vec<u32> {
        views::cpus::visible(&l.cpuset, l.quota, self.cpu_view == CpuView::Quota)
    }

    /// The view, or None for "serve the host file" (nothing to virtualize).
    pub fn render(&self, f: File, r: &Reader, pid: u32) -> VResult<Option<String>> {
        let l = self.limits(&r.cg)?;
        if !self.is_virtual(r, &l) {
            return Ok(None);
        }
        let s = &*r.cg;
        Ok(Some(match f {
            File::Meminfo => meminfo::render(&self.host.meminfo(), &self.mem_facts(s, &l)?),
            File::Swaps => {
                let host_swap = self.host.totals().swap_kb;
                let (total, free) = meminfo::swap_kb(host_swap, &self.mem_facts(s, &l)?);
                views::swaps::render(&self.host.swaps(), total, free)
            }
            File::Cpuinfo => views::cpuinfo::render(&self.host.cpuinfo(), &self.visible(&l)),
            File::CpuOnline | File::CpuPresent | File::CpuPossible => {
                views::cpus::render_list(self.visible(&l).len())
            }
            File::Stat => self.stat(r, &l, pid)?,
            File::Uptime => {
                if r.host_pidns {
                    return Ok(None);
                }
                let n = self.visible(&l).len();
                let used = self.cpu_used_ns(s)? as f64 / 1e9;
                views::uptime::render(self.age_ns(r) as f64 / 1e9, n, used)
            }
            File::Loadavg => {
                if r.host_pidns {
                    return Ok(None);
                }
                ensure_sampled(&s.cg, &s.load);
                let ld = s.load.lock().unwrap_or_else(|e| e.into_inner());
                views::loadavg::render(&ld.loads, ld.running, ld.total, ld.last_pid)
            }
            File::Diskstats => {
                let d = need(s, Controller::Io)?;
                let devs = io::read(&d.dir, d.version)?;
                views::diskstats::render(&self.host.diskstats(), &devs)
            }
            File::Vmstat => self.vmstat(s)?,
            File::PressureCpu | File::PressureMemory | File::PressureIo => {
                let Some(u) = &s.cg.unified else {
                    return Ok(None);
                };
                let name = match f {
                    File::PressureCpu => "cpu.pressure",
                    File::PressureMemory => "memory.pressure",
                    _ => "io.pressure",
                };
                match s.files.read(u, name) {
                    Ok(Some(t)) => t,
                    // No PSI for this cgroup (kernel without it): the host's.
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(file_err(u, name, e)),
                }
            }
        }))
    }

    fn mem_facts(&self, s: &CgState, l: &Limits) -> VResult<meminfo::MemFacts> {
        self.mem_facts_with(s, l, None)
    }

    /// `stat`: memory.stat's counters if the caller holds recent ones (None: read them now).
    fn mem_facts_with(
        &self,
        s: &CgState,
        l: &Limits,
        stat: Option<MemCounters>,
    ) -> VResult<meminfo::MemFacts> {
        let d = need(s, Controller::Memory)?;
        let v2 = d.version == Version::V2;
        let (usage_file, swap_file) = if v2 {
            ("memory.current", "memory.swap.current")
        } else {
            ("memory.usage_in_bytes", "memory.memsw.usage_in_bytes")
        };
        let usage = self.read_u64(s, &d.dir, usage_file)?;
        let stat = match stat {
            Some(c) => c,
            None => {
                let text = memory_stat(s, d)?;
                parsed(
                    &d.dir,
                    MemCounters::parse(Path::new("memory.stat"), d.version, &text),
                )?
            }
        };
        // Without host swap the container's is 0 whatever its counter says (swap_kb): one
        // read fewer per sysinfo(2) call on swapless hosts. Absent without swap accounting.
        let swap = if self.host.totals().swap_kb == 0 {
            None
        } else {
            match s.files.read(&d.dir, swap_file) {
                Ok(Some(t)) => {
                    let raw = parsed(&d.dir, format::u64_of(Path::new(swap_file), "bytes", &t))?;
                    Some(meminfo::SwapFacts {
                        limit: l.swap,
                        usage: if v2 { raw } else { raw.saturating_sub(usage) },
                    })
                }
                Ok(None) => None,
                Err(e) => return Err(file_err(&d.dir, swap_file, e)),
            }
        };
        Ok(meminfo::MemFacts {
            limit: l.mem,
            usage,
            stat,
            swap,
        })
    }

    /// /proc/vmstat from memory.stat and the io counters (0 without an io controller).
    fn vmstat(&self, s: &CgState) -> VResult<String> {
        let d = need(s, Controller::Memory)?;
        let text = memory_stat(s, d)?;
        let stat = parsed(
            &d.dir,
            MemoryStat::parse(Path::new("memory.stat"), d.version, &text),
        )?;
        let io = match s.cg.dir(Controller::Io) {
            Some(d) => io::read(&d.dir, d.version)?.iter().fold(
                views::vmstat::IoBytes::default(),
                |a, x| views::vmstat::IoBytes {
                    read: a.read.saturating_add(x.rbytes),
                    written: a.written.saturating_add(x.wbytes),
                },
            ),
            None => views::vmstat::IoBytes::default(),
        };
        Ok(views::vmstat::render(&self.host.vmstat(), &stat, io))
    }

    /// The container's MemTotal, MemFree, … as /proc/meminfo shows them (for sysinfo(2)), and
    /// the memory.stat counters they used: `stat` passes counters read recently (None: read
    /// them now); usage and swap are read every time.
    pub fn mem_numbers(
        &self,
        r: &Reader,
        stat: Option<MemCounters>,
    ) -> VResult<(meminfo::MemNumbers, MemCounters)> {
        let l = self.limits(&r.cg)?;
        let facts = self.mem_facts_with(&r.cg, &l, stat)?;
        Ok((meminfo::numbers_of(self.host.totals(), &facts), facts.stat))
    }

    /// The container's tasks (threads) now: the pids controller's count, one read of a file
    /// kept open; without that controller, a walk of its threads (as the load sampler's).
    pub fn tasks_now(&self, r: &Reader) -> VResult<u64> {
        let s = &*r.cg;
        match s.cg.dir(Controller::Pids) {
            Some(d) => self.read_u64(s, &d.dir, "pids.current"),
            None => Ok(cgsight_cgroup::tasks::count(&s.cg).total),
        }
    }

    pub fn age_ns(&self, r: &Reader) -> u64 {
        let start_ns = r.start_ticks * (1_000_000_000 / self.clk_tck.max(1));
        host::boottime_ns().saturating_sub(start_ns)
    }

    /// The load sampler: every 5 s, containers read in the last 10 minutes.
    pub fn sample_loads(&self) {
        for s in self.resolver.recently_read(Duration::from_secs(600)) {
            sample_into(&s.cg, &s.load, true);
        }
        self.resolver.prune(Duration::from_secs(600));
    }
}
