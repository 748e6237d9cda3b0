//! The memory controller: limits, usage, swap, and every `memory.stat` key, v1 and v2.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::layout::Version;
use crate::parse::{self, join};

/// `memory.stat`, parsed exactly. Accessors map v1's hierarchical `total_*` keys and v2's keys
/// onto one meaning each; `None` means this kernel does not report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStat {
    pub version: Option<Version>,
    pub raw: BTreeMap<String, u64>,
}

macro_rules! stat_key {
    ($name:ident, $v1:literal, $v2:literal) => {
        pub fn $name(&self) -> Option<u64> {
            self.key($v1, $v2)
        }
    };
}

impl MemoryStat {
    pub fn parse(path: &Path, version: Version, text: &str) -> Result<Self> {
        let mut raw = BTreeMap::new();
        for kv in parse::flat_keyed(path, text) {
            let (k, v) = kv?;
            raw.insert(k.to_owned(), v);
        }
        Ok(MemoryStat {
            version: Some(version),
            raw,
        })
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        self.raw.get(key).copied()
    }

    /// v1 prefers the hierarchical `total_<key>` (what the whole subtree uses), then `<key>`.
    fn key(&self, v1: &str, v2: &str) -> Option<u64> {
        match self.version {
            Some(Version::V2) => self.get(v2),
            _ => {
                let mut total = String::with_capacity(6 + v1.len());
                total.push_str("total_");
                total.push_str(v1);
                self.get(&total).or_else(|| self.get(v1))
            }
        }
    }

    stat_key!(anon, "rss", "anon");
    stat_key!(file, "cache", "file");
    stat_key!(active_anon, "active_anon", "active_anon");
    stat_key!(inactive_anon, "inactive_anon", "inactive_anon");
    stat_key!(active_file, "active_file", "active_file");
    stat_key!(inactive_file, "inactive_file", "inactive_file");
    stat_key!(unevictable, "unevictable", "unevictable");
    stat_key!(shmem, "shmem", "shmem");
    stat_key!(file_mapped, "mapped_file", "file_mapped");
    stat_key!(file_dirty, "dirty", "file_dirty");
    stat_key!(file_writeback, "writeback", "file_writeback");
    stat_key!(anon_thp, "rss_huge", "anon_thp");
    stat_key!(pgfault, "pgfault", "pgfault");
    stat_key!(pgmajfault, "pgmajfault", "pgmajfault");

    /// Swapped-out anon pages as v1 memory.stat reports them; v2 has `memory.swap.current`.
    pub fn swap(&self) -> Option<u64> {
        match self.version {
            Some(Version::V2) => None,
            _ => self.key("swap", ""),
        }
    }

    /// Slab is reported by v2 only.
    pub fn slab(&self) -> Option<u64> {
        self.v2_only("slab")
    }
    pub fn slab_reclaimable(&self) -> Option<u64> {
        self.v2_only("slab_reclaimable")
    }
    pub fn slab_unreclaimable(&self) -> Option<u64> {
        self.v2_only("slab_unreclaimable")
    }
    pub fn kernel_stack(&self) -> Option<u64> {
        self.v2_only("kernel_stack")
    }
    pub fn pagetables(&self) -> Option<u64> {
        self.v2_only("pagetables")
    }

    fn v2_only(&self, k: &str) -> Option<u64> {
        match self.version {
            Some(Version::V2) => self.get(k),
            _ => None,
        }
    }
}

/// Swap accounting of a cgroup; absent when the kernel does not account swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Swap {
    /// Swap in use (v1: memsw.usage − usage; v2: memory.swap.current).
    pub usage: u64,
    /// Swap-only limit (v1: memsw.limit − limit; v2: memory.swap.max). None = unlimited.
    pub limit: Option<u64>,
    /// v1's raw memory+swap limit, for tools that speak docker's `--memory-swap`.
    pub memsw_limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub usage: u64,
    /// This cgroup's own limit; see [`crate::Cgroup::effective_memory_limit`] for ancestors.
    pub limit: Option<u64>,
    /// High-water mark (v1 max_usage_in_bytes, v2 memory.peak on kernels ≥ 5.19).
    pub peak: Option<u64>,
    /// v1 failcnt; v2 memory.events `max`.
    pub failcnt: Option<u64>,
    /// v2: the OOM events of the same memory.events read (v1 keeps them in memory.oom_control,
    /// read by `oom::read`).
    pub oom: Option<crate::oom::OomEvents>,
    pub swap: Option<Swap>,
    pub stat: MemoryStat,
}

impl Memory {
    /// cAdvisor's working set: usage − inactive_file, floored at 0.
    pub fn working_set(&self) -> u64 {
        self.usage
            .saturating_sub(self.stat.inactive_file().unwrap_or(0))
    }
}

pub fn read_limit(dir: &Path, v: Version) -> Result<Option<u64>> {
    match v {
        Version::V1 => parse::read_limit(&join(dir, "memory.limit_in_bytes")),
        Version::V2 => match parse::read_opt(&join(dir, "memory.max"))? {
            Some(t) => parse::limit_of(&join(dir, "memory.max"), &t),
            // The v2 root has no memory.max: it is unlimited.
            None => Ok(None),
        },
    }
}

pub fn read_usage(dir: &Path, v: Version) -> Result<u64> {
    match v {
        Version::V1 => parse::read_u64(&join(dir, "memory.usage_in_bytes")),
        Version::V2 => parse::read_u64(&join(dir, "memory.current")),
    }
}

pub fn read_stat(dir: &Path, v: Version) -> Result<MemoryStat> {
    let p = join(dir, "memory.stat");
    let text = parse::read(&p)?;
    MemoryStat::parse(&p, v, &text)
}

/// Swap limits from the limit files only: `(swap-only limit, v1 raw memory+swap limit)`, each
/// None when unlimited; the outer None means swap is not accounted. `limit` is the memory limit.
pub fn read_swap_limits(
    dir: &Path,
    v: Version,
    limit: Option<u64>,
) -> Result<Option<(Option<u64>, Option<u64>)>> {
    match v {
        Version::V1 => {
            let p = join(dir, "memory.memsw.limit_in_bytes");
            let Some(t) = parse::read_opt(&p)? else {
                return Ok(None);
            };
            let memsw_limit = parse::limit_of(&p, &t)?;
            let swap_limit = match (memsw_limit, limit) {
                (Some(ms), Some(m)) => Some(ms.saturating_sub(m)),
                (Some(ms), None) => Some(ms),
                (None, _) => None,
            };
            Ok(Some((swap_limit, memsw_limit)))
        }
        Version::V2 => {
            let p = join(dir, "memory.swap.max");
            match parse::read_opt(&p)? {
                Some(t) => Ok(Some((parse::limit_of(&p, &t)?, None))),
                None => Ok(None),
            }
        }
    }
}

pub fn read_swap(dir: &Path, v: Version, usage: u64, limit: Option<u64>) -> Result<Option<Swap>> {
    let used = match v {
        Version::V1 => parse::read_u64_opt(&join(dir, "memory.memsw.usage_in_bytes"))?
            .map(|memsw| memsw.saturating_sub(usage)),
        Version::V2 => parse::read_u64_opt(&join(dir, "memory.swap.current"))?,
    };
    let Some(used) = used else {
        return Ok(None);
    };
    let (limit, memsw_limit) = read_swap_limits(dir, v, limit)?.unwrap_or((None, None));
    Ok(Some(Swap {
        usage: used,
        limit,
        memsw_limit,
    }))
}

pub fn read(dir: &Path, v: Version) -> Result<Memory> {
    let mut oom = None;
    let usage = read_usage(dir, v)?;
    let limit = read_limit(dir, v)?;
    let stat = read_stat(dir, v)?;
    let (peak, failcnt) = match v {
        Version::V1 => (
            parse::read_u64_opt(&join(dir, "memory.max_usage_in_bytes"))?,
            parse::read_u64_opt(&join(dir, "memory.failcnt"))?,
        ),
        Version::V2 => {
            let peak = parse::read_u64_opt(&join(dir, "memory.peak"))?;
            let events = crate::oom::read_events_v2(dir)?;
            oom = events.as_ref().map(|e| e.0.clone());
            (peak, events.and_then(|e| e.1))
        }
    };
    let swap = read_swap(dir, v, usage, limit)?;
    Ok(Memory {
        usage,
        limit,
        peak,
        failcnt,
        swap,
        stat,
        oom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 memory.stat with the `total_rss` / `total_rss_huge` prefix trap lxcfs falls into.
    const V1_STAT: &str = "cache 100\nrss 200\nrss_huge 0\nmapped_file 7\ntotal_cache 1000\ntotal_rss 2000\ntotal_rss_huge 2097152\ntotal_mapped_file 70\ntotal_dirty 5\ntotal_writeback 6\ntotal_inactive_file 300\ntotal_active_file 400\ntotal_shmem 9\ntotal_swap 0\n";
    /// A v2 memory.stat with the `file` / `file_mapped` prefix trap.
    const V2_STAT: &str = "anon 2000\nfile 1000\nkernel 50\nkernel_stack 16384\npagetables 8\nshmem 9\nfile_mapped 70\nfile_dirty 5\nfile_writeback 6\nanon_thp 2097152\ninactive_anon 1\nactive_anon 2\ninactive_file 300\nactive_file 400\nunevictable 0\nslab_reclaimable 11\nslab_unreclaimable 12\nslab 23\npgfault 99\npgmajfault 1\n";

    #[test]
    fn v1_keys_are_exact_and_hierarchical() {
        let s = MemoryStat::parse(Path::new("memory.stat"), Version::V1, V1_STAT).unwrap();
        assert_eq!(s.anon(), Some(2000));
        assert_eq!(s.anon_thp(), Some(2097152));
        assert_eq!(s.file(), Some(1000));
        assert_eq!(s.file_mapped(), Some(70));
        assert_eq!(s.file_dirty(), Some(5));
        assert_eq!(s.slab(), None);
    }

    #[test]
    fn v2_keys_are_exact() {
        let s = MemoryStat::parse(Path::new("memory.stat"), Version::V2, V2_STAT).unwrap();
        assert_eq!(s.file(), Some(1000));
        assert_eq!(s.file_mapped(), Some(70));
        assert_eq!(s.file_dirty(), Some(5));
        assert_eq!(s.file_writeback(), Some(6));
        assert_eq!(s.anon_thp(), Some(2097152));
        assert_eq!(s.slab_reclaimable(), Some(11));
        assert_eq!(s.swap(), None);
    }

    #[test]
    fn unparsable_stat_names_the_path() {
        let e =
            MemoryStat::parse(Path::new("/x/memory.stat"), Version::V2, "anon lots\n").unwrap_err();
        assert!(e.to_string().contains("/x/memory.stat"), "{e}");
    }
}
