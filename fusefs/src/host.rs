//! The host's own files: read fresh for passthrough, cached briefly where only their layout
//! or configuration is used (a virtualized meminfo needs the host's MemTotal and line set, not
//! its live usage).
//!
//! The catalogue's host files are opened once and re-read with `pread` from offset 0 (procfs
//! and sysfs regenerate a file read from its start): serving the host file is the fallback of
//! every failed view, and running out of descriptors is one reason a view fails, so that
//! fallback must not need a new descriptor.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::views::cpuinfo::HostCpuinfo;
use crate::views::meminfo::HostTotals;
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

/// The whole of a kept file, read from offset 0.
fn pread_all(f: &std::fs::File) -> std::io::Result<String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = f.read_at(buf.get_mut(len..).unwrap_or_default(), len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    buf.truncate(len);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[derive(Default)]
pub struct Host {
    /// The catalogue's host files by path, kept open (see the module doc).
    kept: HashMap<&'static str, std::fs::File>,
    meminfo: Mutex<Slot<String>>,
    totals: Mutex<Slot<HostTotals>>,
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
    /// With the catalogue's host files open (those that exist here).
    pub fn open() -> Host {
        let kept = crate::catalogue::File::ALL
            .iter()
            .filter_map(|f| {
                let p = f.host_path();
                std::fs::File::open(p).ok().map(|file| (p, file))
            })
            .collect();
        Host {
            kept,
            ..Host::default()
        }
    }

    /// A catalogue host file (kept open), or any other path (opened now); empty if unreadable.
    pub fn read(&self, path: &str) -> String {
        match self.kept.get(path) {
            Some(f) => pread_all(f).unwrap_or_default(),
            None => read(path),
        }
    }

    pub fn meminfo(&self) -> Arc<String> {
        cached(&self.meminfo, || self.read("/proc/meminfo"))
    }
    pub fn stat(&self) -> Arc<String> {
        cached(&self.stat, || self.read("/proc/stat"))
    }
    pub fn diskstats(&self) -> Arc<String> {
        cached(&self.diskstats, || self.read("/proc/diskstats"))
    }
    pub fn swaps(&self) -> Arc<String> {
        cached(&self.swaps, || self.read("/proc/swaps"))
    }
    /// Only its key set is used.
    pub fn vmstat(&self) -> Arc<String> {
        cached(&self.vmstat, || self.read("/proc/vmstat"))
    }
    pub fn cpuinfo(&self) -> Arc<HostCpuinfo> {
        cached(&self.cpuinfo, || {
            HostCpuinfo::parse(&self.read("/proc/cpuinfo"))
        })
    }
    /// The host's online CPUs.
    pub fn online(&self) -> Arc<Vec<u32>> {
        cached(&self.online, || {
            cgsight_cgroup::CpuList::parse(self.read("/sys/devices/system/cpu/online").trim())
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
    /// MemTotal and SwapTotal, parsed once a TTL rather than on every use (they change only
    /// with memory hotplug or swapon).
    pub fn totals(&self) -> HostTotals {
        *cached(&self.totals, || HostTotals::of(&self.meminfo()))
    }
    pub fn mem_total_bytes(&self) -> u64 {
        self.totals().mem_kb * 1024
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

#[cfg(test)]
mod tests {
    use super::Host;

    #[test]
    fn kept_host_files_read_like_fresh_ones_every_time() {
        let h = Host::open();
        for p in [
            "/proc/meminfo",
            "/proc/cpuinfo",
            "/sys/devices/system/cpu/online",
        ] {
            let fresh = std::fs::read_to_string(p).unwrap();
            let kept = h.read(p);
            // Same layout (values such as MemFree move between the two reads).
            let keys = |t: &str| {
                t.lines()
                    .map(|l| l.split(':').next().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(&kept), keys(&fresh), "{p}");
        }
        // Read again (the kept descriptor at offset 0 gives the current text, not EOF).
        let again = h.read("/proc/uptime");
        assert_eq!(again.split_whitespace().count(), 2, "{again:?}");
        assert_eq!(h.read("/proc/uptime").split_whitespace().count(), 2);
    }
}
