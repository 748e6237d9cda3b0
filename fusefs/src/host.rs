//! The host's own files: read fresh for passthrough, cached briefly where only their layout
//! or configuration is used (a virtualized meminfo needs the host's MemTotal and line set, not
//! its live usage).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::views::cpuinfo::HostCpuinfo;
use crate::views::topology::{HostCpu, CACHE_FILES, MAX_CACHES, TOPOLOGY_FILES};

const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Slot<T> {
    at: Option<Instant>,
    val: Option<Arc<T>>,
}

fn cached<T>(m: &Mutex<Slot<T>>, load: impl FnOnce() -> T) -> Arc<T> {
    let now = Instant::now();
    {
        let s = m.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(at), Some(v)) = (s.at, s.val.as_ref()) {
            if now.duration_since(at) < TTL {
                return v.clone();
            }
        }
    }
    let v = Arc::new(load());
    let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
    s.at = Some(now);
    s.val = Some(v.clone());
    v
}

/// Reads a host file; an unreadable one is empty (the kernel file is what it is).
pub fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[derive(Default)]
pub struct Host {
    meminfo: Mutex<Slot<String>>,
    stat: Mutex<Slot<String>>,
    diskstats: Mutex<Slot<String>>,
    swaps: Mutex<Slot<String>>,
    vmstat: Mutex<Slot<String>>,
    cpuinfo: Mutex<Slot<HostCpuinfo>>,
    online: Mutex<Slot<Vec<u32>>>,
    /// Per host CPU, read once: topology and caches do not change while a CPU id exists.
    cpus: Mutex<std::collections::HashMap<u32, Arc<HostCpu>>>,
}

/// Reads the files `names` of `dir` that exist (trimmed).
fn read_dir_files(dir: &str, names: &[&str]) -> std::collections::BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|n| {
            let v = std::fs::read_to_string(format!("{dir}/{n}")).ok()?;
            Some(((*n).to_owned(), v.trim().to_owned()))
        })
        .collect()
}

impl Host {
    pub fn meminfo(&self) -> Arc<String> {
        cached(&self.meminfo, || read("/proc/meminfo"))
    }
    pub fn stat(&self) -> Arc<String> {
        cached(&self.stat, || read("/proc/stat"))
    }
    pub fn diskstats(&self) -> Arc<String> {
        cached(&self.diskstats, || read("/proc/diskstats"))
    }
    pub fn swaps(&self) -> Arc<String> {
        cached(&self.swaps, || read("/proc/swaps"))
    }
    /// Only its key set is used.
    pub fn vmstat(&self) -> Arc<String> {
        cached(&self.vmstat, || read("/proc/vmstat"))
    }
    pub fn cpuinfo(&self) -> Arc<HostCpuinfo> {
        cached(&self.cpuinfo, || HostCpuinfo::parse(&read("/proc/cpuinfo")))
    }
    /// The host's online CPUs.
    pub fn online(&self) -> Arc<Vec<u32>> {
        cached(&self.online, || {
            cgsight_cgroup::CpuList::parse(read("/sys/devices/system/cpu/online").trim())
                .map(|l| l.cpus().to_vec())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| vec![0])
        })
    }
    /// Host CPU `cpu`'s topology/ and cache/indexK/ files.
    pub fn cpu(&self, cpu: u32) -> Arc<HostCpu> {
        let mut m = self.cpus.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(cpu)
            .or_insert_with(|| {
                let base = format!("/sys/devices/system/cpu/cpu{cpu}");
                let caches = (0..MAX_CACHES)
                    .map(|k| read_dir_files(&format!("{base}/cache/index{k}"), &CACHE_FILES))
                    .take_while(|c| !c.is_empty())
                    .collect();
                Arc::new(HostCpu {
                    topology: read_dir_files(&format!("{base}/topology"), &TOPOLOGY_FILES),
                    caches,
                })
            })
            .clone()
    }
    pub fn mem_total_bytes(&self) -> u64 {
        crate::views::field(&self.meminfo(), "MemTotal").unwrap_or(0) * 1024
    }
}

/// Nanoseconds since boot, counting suspend (what /proc/uptime and process start times use).
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Clock ticks per second of /proc/<pid>/stat times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}
