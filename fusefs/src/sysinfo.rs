//! sysinfo(2) for one container, answered by the same engine as the /proc views: memory from
//! `views::meminfo::numbers` (as /proc/meminfo), uptime from the init's age (as /proc/uptime),
//! loads from the container's load state stepped by the caller (as /proc/loadavg), threads
//! from the pids controller (or the sampler's walk).
//!
//! The launcher's supervisor holds one [`ContainerFacts`] per container and answers the
//! container's intercepted sysinfo calls with [`ContainerFacts::sysinfo`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cgsight_cgroup::memory::MemCounters;
use cgsight_cgroup::{Cgroup, Hierarchies};

use crate::engine::{Engine, ViewError};
use crate::load::sample_into;
use crate::metrics::FsMetrics;
use crate::resolve::{CgState, Reader, Resolver};
use crate::views::{loadavg, uptime};
use crate::CpuView;

/// The numbers of `struct sysinfo`, memory in bytes (`mem_unit` 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sysinfo {
    /// Seconds since the container's init started, rounded up as the kernel does.
    pub uptime: i64,
    /// 1, 5 and 15 minute load averages, 16 fraction bits (SI_LOAD_SHIFT).
    pub loads: [u64; 3],
    pub totalram: u64,
    pub freeram: u64,
    pub sharedram: u64,
    pub bufferram: u64,
    pub totalswap: u64,
    pub freeswap: u64,
    /// Threads in the container's cgroup (the kernel counts threads too).
    pub procs: u64,
}

/// Why the container's numbers could not be computed (the caller then lets the kernel answer).
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct SysinfoError {
    pub reason: &'static str,
    pub detail: String,
}

impl From<ViewError> for SysinfoError {
    fn from(e: ViewError) -> Self {
        SysinfoError {
            reason: e.reason,
            detail: e.detail,
        }
    }
}

/// How long memory.stat's counters are reused. sysinfo(2) takes only Shmem (sharedram) from
/// them, and memory.stat is most of a call's cost (the kernel formats ~70 lines, we parse
/// them). Reusing it this briefly is invisible: the kernel itself refreshes memcg statistics
/// only once enough updates are pending or every 2 s, so memory.stat already lags small
/// changes by up to 2 s. Usage, swap and tasks (free's used/free, procs) are read every call.
const STAT_TTL: Duration = Duration::from_millis(10);

/// One container's view state outside a FUSE server: its cgroup files, limits and load.
pub struct ContainerFacts {
    engine: Engine,
    reader: Reader,
    /// memory.stat's counters and when they were read (see [`STAT_TTL`]).
    stat: Mutex<Option<(Instant, MemCounters)>>,
}

impl ContainerFacts {
    /// `start_ticks`: the container init's start (field 22 of the host's /proc/PID/stat).
    pub fn new(h: Hierarchies, cg: Cgroup, start_ticks: u64) -> ContainerFacts {
        let engine = Engine::new(
            Resolver::new(h),
            CpuView::default(),
            Arc::new(FsMetrics::default()),
        );
        let reader = Reader {
            host_pidns: false,
            start_ticks,
            cg: Arc::new(CgState::new(cg)),
        };
        ContainerFacts {
            engine,
            reader,
            stat: Mutex::new(None),
        }
    }

    /// One 5-second step of the load averages (the caller's timer, as the views' sampler).
    pub fn sample_load(&self) {
        let s = &self.reader.cg;
        sample_into(&s.cg, &s.load, true);
    }

    pub fn sysinfo(&self) -> Result<Sysinfo, SysinfoError> {
        let s = &self.reader.cg;
        let mem = {
            let mut cached = self.stat.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let fresh = cached
                .filter(|(at, _)| now.duration_since(*at) < STAT_TTL)
                .map(|(_, c)| c);
            let (mem, stat) = self.engine.mem_numbers(&self.reader, fresh)?;
            if fresh.is_none() {
                *cached = Some((now, stat));
            }
            mem
        };
        // Counted now (not at the last 5 s sample), as the kernel's nr_threads.
        let procs = self.engine.tasks_now(&self.reader)?;
        let loads = {
            let l = s.load.lock().unwrap_or_else(|e| e.into_inner());
            loadavg::sysinfo_loads(&l.loads)
        };
        let kib = |k: u64| k.saturating_mul(1024);
        Ok(Sysinfo {
            uptime: uptime::whole_secs(self.engine.age_ns(&self.reader)),
            loads,
            totalram: kib(mem.total),
            freeram: kib(mem.free),
            sharedram: kib(mem.shmem),
            bufferram: kib(mem.buffers),
            totalswap: kib(mem.swap_total),
            freeswap: kib(mem.swap_free),
            procs,
        })
    }
}
