//! Facts about the host the agent runs on, read once or per scrape from /proc, /sys and
//! statvfs: boot time, online CPUs, installed memory, the root filesystem's device and usage,
//! network namespace identity, block device names, and the v2 root's memory (from meminfo).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cgsight_cgroup::memory::{MemCounters, Memory, MemoryStat, StatKey};
use cgsight_cgroup::Version;

/// What the collector needs to know about the host, probed once at start.
pub struct Host {
    /// Seconds since the epoch (0 if /proc/stat is unreadable).
    pub boot_time: f64,
    pub cpu_cores: u64,
    /// `MemTotal` in bytes (0 if /proc/meminfo is unreadable).
    pub mem_total: u64,
    /// The mount source of `/` and the path statvfs is asked about.
    pub root_fs: Option<(String, PathBuf)>,
    /// Inode of the host's network namespace.
    pub netns: Option<u64>,
    /// The root cgroup's net/dev: pid 1's when we can see its namespace, else our own.
    pub netdev: &'static str,
}

impl Host {
    pub fn probe() -> Self {
        let pid1 = netns_inode(1);
        Host {
            boot_time: boot_time().unwrap_or(0.0),
            cpu_cores: online_cpus(),
            mem_total: mem_total().unwrap_or(0),
            root_fs: root_device().map(|d| (d, PathBuf::from("/"))),
            netns: pid1.or_else(|| netns_of("/proc/self/ns/net")),
            netdev: if pid1.is_some() {
                "/proc/1/net/dev"
            } else {
                "/proc/self/net/dev"
            },
        }
    }
}

fn netns_of(p: &str) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// Inode of a process's network namespace (None once it has exited).
pub fn netns_inode(pid: i32) -> Option<u64> {
    netns_of(&format!("/proc/{pid}/ns/net"))
}

fn boot_time() -> Option<f64> {
    let t = std::fs::read_to_string("/proc/stat").ok()?;
    t.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn online_cpus() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u64
    } else {
        1
    }
}

fn meminfo() -> Option<HashMap<String, u64>> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(
        t.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                let n: u64 = v.split_whitespace().next()?.parse().ok()?;
                Some((k.to_owned(), n * 1024))
            })
            .collect(),
    )
}

fn mem_total() -> Option<u64> {
    meminfo()?.get("MemTotal").copied()
}

/// The v2 root's memory from /proc/meminfo (the root has no memory.current).
pub fn root_memory_v2() -> Option<(Memory, MemCounters)> {
    let m = meminfo()?;
    let g = |k: &str| m.get(k).copied().unwrap_or(0);
    let usage = g("MemTotal").saturating_sub(g("MemFree"));
    let mut c = MemCounters::default();
    c.set(StatKey::InactiveFile, g("Inactive(file)"));
    c.set(StatKey::ActiveFile, g("Active(file)"));
    c.set(StatKey::File, g("Cached"));
    c.set(StatKey::Anon, g("AnonPages"));
    c.set(StatKey::FileMapped, g("Mapped"));
    let mem = Memory {
        usage,
        limit: None,
        peak: None,
        failcnt: None,
        swap: None,
        oom: None,
        stat: MemoryStat {
            version: Some(Version::V2),
            raw: BTreeMap::new(),
        },
    };
    Some((mem, c))
}

/// `/dev/<DEVNAME>` of a block device, from sysfs; `major:minor` if unknown.
pub fn device_name(major: u32, minor: u32) -> String {
    let p = format!("/sys/dev/block/{major}:{minor}/uevent");
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The mount source of `/` (the topmost mount there).
fn root_device() -> Option<String> {
    let m = cgsight_cgroup::mountinfo::read_self().ok()?;
    cgsight_cgroup::mountinfo::top_mount_at(&m, Path::new("/")).map(|e| e.source.clone())
}

/// (used, total) bytes of the filesystem holding `p`.
pub fn statvfs_usage(p: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and s a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let bs = s.f_frsize as u64;
    let total = s.f_blocks as u64 * bs;
    let used = (s.f_blocks as u64).saturating_sub(s.f_bfree as u64) * bs;
    Some((used, total))
}
