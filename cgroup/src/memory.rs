//! The memory controller: limits, usage, swap, and every `memory.stat` key, v1 and v2.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::layout::Version;
use crate::parse::{self, join};

/// The memory.stat counters that mean one thing on v1 and v2, whatever each version calls them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum StatKey {
    Anon,
    File,
    ActiveAnon,
    InactiveAnon,
    ActiveFile,
    InactiveFile,
    Unevictable,
    Shmem,
    FileMapped,
    FileDirty,
    FileWriteback,
    AnonThp,
    /// Swapped-out anon pages (v1 only; v2 has memory.swap.current).
    Swap,
    Slab,
    SlabReclaimable,
    SlabUnreclaimable,
    KernelStack,
    Pagetables,
    Pgfault,
    Pgmajfault,
}

impl StatKey {
    pub const ALL: [StatKey; 20] = [
        StatKey::Anon,
        StatKey::File,
        StatKey::ActiveAnon,
        StatKey::InactiveAnon,
        StatKey::ActiveFile,
        StatKey::InactiveFile,
        StatKey::Unevictable,
        StatKey::Shmem,
        StatKey::FileMapped,
        StatKey::FileDirty,
        StatKey::FileWriteback,
        StatKey::AnonThp,
        StatKey::Swap,
        StatKey::Slab,
        StatKey::SlabReclaimable,
        StatKey::SlabUnreclaimable,
        StatKey::KernelStack,
        StatKey::Pagetables,
        StatKey::Pgfault,
        StatKey::Pgmajfault,
    ];

    /// The key map, the one table of it: the name on v1 (where v1 also has a hierarchical
    /// `total_<name>`) and on v2; `None` where that version does not report the counter.
    pub const fn names(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            StatKey::Anon => (Some("rss"), Some("anon")),
            StatKey::File => (Some("cache"), Some("file")),
            StatKey::ActiveAnon => (Some("active_anon"), Some("active_anon")),
            StatKey::InactiveAnon => (Some("inactive_anon"), Some("inactive_anon")),
            StatKey::ActiveFile => (Some("active_file"), Some("active_file")),
            StatKey::InactiveFile => (Some("inactive_file"), Some("inactive_file")),
            StatKey::Unevictable => (Some("unevictable"), Some("unevictable")),
            StatKey::Shmem => (Some("shmem"), Some("shmem")),
            StatKey::FileMapped => (Some("mapped_file"), Some("file_mapped")),
            StatKey::FileDirty => (Some("dirty"), Some("file_dirty")),
            StatKey::FileWriteback => (Some("writeback"), Some("file_writeback")),
            StatKey::AnonThp => (Some("rss_huge"), Some("anon_thp")),
            StatKey::Swap => (Some("swap"), None),
            StatKey::Slab => (None, Some("slab")),
            StatKey::SlabReclaimable => (None, Some("slab_reclaimable")),
            StatKey::SlabUnreclaimable => (None, Some("slab_unreclaimable")),
            StatKey::KernelStack => (None, Some("kernel_stack")),
            StatKey::Pagetables => (None, Some("pagetables")),
            StatKey::Pgfault => (Some("pgfault"), Some("pgfault")),
            StatKey::Pgmajfault => (Some("pgmajfault"), Some("pgmajfault")),
        }
    }

    /// The name on `v`.
    pub fn name(self, v: Version) -> Option<&'static str> {
        match v {
            Version::V1 => self.names().0,
            Version::V2 => self.names().1,
        }
    }

    /// Which counter a raw memory.stat key is on `v`, and whether it is v1's hierarchical
    /// `total_*` form (exact names: `file` is not `file_mapped`, `rss` not `rss_huge`).
    pub fn of(v: Version, raw: &str) -> Option<(StatKey, bool)> {
        let (name, total) = match (v, raw.strip_prefix("total_")) {
            (Version::V1, Some(n)) => (n, true),
            _ => (raw, false),
        };
        StatKey::ALL
            .into_iter()
            .find(|k| k.name(v) == Some(name))
            .map(|k| (k, total))
    }
}

/// The [`StatKey`] counters of one memory.stat, parsed without allocating (the FUSE views
/// parse memory.stat on every meminfo read, the agent on every scrape). v1 reports a counter
/// for the cgroup itself (`key`) and for its subtree (`total_key`): both are kept, and
/// [`Self::get`] prefers the subtree's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemCounters {
    own: [Option<u64>; StatKey::ALL.len()],
    total: [Option<u64>; StatKey::ALL.len()],
}

impl MemCounters {
    pub fn parse(path: &Path, v: Version, text: &str) -> Result<MemCounters> {
        let mut c = MemCounters::default();
        c.fill_with(path, text, |_, raw| StatKey::of(v, raw))?;
        Ok(c)
    }

    /// As [`Self::parse`], into `self`, with `lines` remembering which counter each line of
    /// the previous text held: the kernel prints the same keys in the same order for every
    /// cgroup, so a line's key is then recognised with one comparison instead of a search.
    pub fn fill(
        &mut self,
        lines: &mut StatLines,
        path: &Path,
        v: Version,
        text: &str,
    ) -> Result<()> {
        if lines.version != Some(v) {
            lines.keys.clear();
            lines.version = Some(v);
        }
        self.fill_with(path, text, |i, raw| lines.classify(i, v, raw))
    }

    fn fill_with(
        &mut self,
        path: &Path,
        text: &str,
        mut classify: impl FnMut(usize, &str) -> Option<(StatKey, bool)>,
    ) -> Result<()> {
        *self = MemCounters::default();
        for (i, kv) in parse::flat_keyed(path, text).enumerate() {
            let (raw, value) = kv?;
            let Some((k, total)) = classify(i, raw) else {
                continue;
            };
            let slots = if total {
                &mut self.total
            } else {
                &mut self.own
            };
            if let Some(slot) = slots.get_mut(k as usize) {
                *slot = Some(value);
            }
        }
        Ok(())
    }

    /// `None` when this memory.stat does not report `k`: the subtree's value where v1 has
    /// one, else the cgroup's own.
    pub fn get(&self, k: StatKey) -> Option<u64> {
        self.hierarchical(k).or_else(|| self.own(k))
    }

    /// The plain `key` (on v1 this cgroup alone; v2 has only this, hierarchical).
    pub fn own(&self, k: StatKey) -> Option<u64> {
        self.own.get(k as usize).copied().flatten()
    }

    /// v1's `total_key` (the cgroup and its descendants); `None` on v2.
    pub fn hierarchical(&self, k: StatKey) -> Option<u64> {
        self.total.get(k as usize).copied().flatten()
    }

    /// Sets the plain `key` (counters derived from elsewhere, as the v2 root's from meminfo).
    pub fn set(&mut self, k: StatKey, value: u64) {
        if let Some(slot) = self.own.get_mut(k as usize) {
            *slot = Some(value);
        }
    }

    /// The value, 0 when not reported.
    pub fn bytes(&self, k: StatKey) -> u64 {
        self.get(k).unwrap_or(0)
    }
}

/// Which counter each line of the last memory.stat parsed by [`MemCounters::fill`] held,
/// by line number (reused across cgroups and reads).
#[derive(Clone, Debug, Default)]
pub struct StatLines {
    version: Option<Version>,
    keys: Vec<(String, Option<(StatKey, bool)>)>,
}

impl StatLines {
    fn classify(&mut self, i: usize, v: Version, raw: &str) -> Option<(StatKey, bool)> {
        match self.keys.get_mut(i) {
            Some((key, slot)) if key == raw => *slot,
            Some((key, slot)) => {
                key.clear();
                key.push_str(raw);
                *slot = StatKey::of(v, raw);
                *slot
            }
            None => {
                let slot = StatKey::of(v, raw);
                self.keys.push((raw.to_owned(), slot));
                slot
            }
        }
    }
}

/// `memory.stat`, parsed exactly. Accessors map v1's hierarchical `total_*` keys and v2's keys
/// onto one meaning each; `None` means this kernel does not report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStat {
    pub version: Option<Version>,
    pub raw: BTreeMap<String, u64>,
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

    /// The counter through the [`StatKey`] map: on v1 the hierarchical `total_<key>` (what
    /// the whole subtree uses), else `<key>`.
    pub fn stat(&self, k: StatKey) -> Option<u64> {
        match self.version {
            Some(Version::V2) => self.get(k.names().1?),
            _ => {
                let name = k.names().0?;
                let mut total = String::with_capacity(6 + name.len());
                total.push_str("total_");
                total.push_str(name);
                self.get(&total).or_else(|| self.get(name))
            }
        }
    }

    pub fn anon(&self) -> Option<u64> {
        self.stat(StatKey::Anon)
    }
    pub fn file(&self) -> Option<u64> {
        self.stat(StatKey::File)
    }
    pub fn active_anon(&self) -> Option<u64> {
        self.stat(StatKey::ActiveAnon)
    }
    pub fn inactive_anon(&self) -> Option<u64> {
        self.stat(StatKey::InactiveAnon)
    }
    pub fn active_file(&self) -> Option<u64> {
        self.stat(StatKey::ActiveFile)
    }
    pub fn inactive_file(&self) -> Option<u64> {
        self.stat(StatKey::InactiveFile)
    }
    pub fn unevictable(&self) -> Option<u64> {
        self.stat(StatKey::Unevictable)
    }
    pub fn shmem(&self) -> Option<u64> {
        self.stat(StatKey::Shmem)
    }
    pub fn file_mapped(&self) -> Option<u64> {
        self.stat(StatKey::FileMapped)
    }
    pub fn file_dirty(&self) -> Option<u64> {
        self.stat(StatKey::FileDirty)
    }
    pub fn file_writeback(&self) -> Option<u64> {
        self.stat(StatKey::FileWriteback)
    }
    pub fn anon_thp(&self) -> Option<u64> {
        self.stat(StatKey::AnonThp)
    }
    pub fn pgfault(&self) -> Option<u64> {
        self.stat(StatKey::Pgfault)
    }
    pub fn pgmajfault(&self) -> Option<u64> {
        self.stat(StatKey::Pgmajfault)
    }
    /// Swapped-out anon pages as v1 memory.stat reports them; v2 has `memory.swap.current`.
    pub fn swap(&self) -> Option<u64> {
        self.stat(StatKey::Swap)
    }
    /// Slab and the kernel counters below are reported by v2 only.
    pub fn slab(&self) -> Option<u64> {
        self.stat(StatKey::Slab)
    }
    pub fn slab_reclaimable(&self) -> Option<u64> {
        self.stat(StatKey::SlabReclaimable)
    }
    pub fn slab_unreclaimable(&self) -> Option<u64> {
        self.stat(StatKey::SlabUnreclaimable)
    }
    pub fn kernel_stack(&self) -> Option<u64> {
        self.stat(StatKey::KernelStack)
    }
    pub fn pagetables(&self) -> Option<u64> {
        self.stat(StatKey::Pagetables)
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
    fn counters_map_v1_and_v2_to_one_meaning() {
        let p = Path::new("memory.stat");
        let c = MemCounters::parse(p, Version::V1, V1_STAT).unwrap();
        let s = MemoryStat::parse(p, Version::V1, V1_STAT).unwrap();
        assert_eq!(c.get(StatKey::Anon), Some(2000));
        assert_eq!(c.get(StatKey::AnonThp), Some(2097152));
        assert_eq!(c.get(StatKey::File), Some(1000));
        assert_eq!(c.get(StatKey::FileMapped), Some(70));
        assert_eq!(c.get(StatKey::Swap), Some(0));
        assert_eq!(c.get(StatKey::Slab), None);
        for k in StatKey::ALL {
            assert_eq!(c.get(k), s.stat(k), "{k:?} on v1");
        }
        let c = MemCounters::parse(p, Version::V2, V2_STAT).unwrap();
        let s = MemoryStat::parse(p, Version::V2, V2_STAT).unwrap();
        assert_eq!(c.get(StatKey::File), Some(1000));
        assert_eq!(c.get(StatKey::FileMapped), Some(70));
        assert_eq!(c.get(StatKey::SlabReclaimable), Some(11));
        assert_eq!(c.get(StatKey::Swap), None);
        assert_eq!(c.bytes(StatKey::Swap), 0);
        for k in StatKey::ALL {
            assert_eq!(c.get(k), s.stat(k), "{k:?} on v2");
        }
    }

    #[test]
    fn v1_without_totals_uses_the_local_keys() {
        let c = MemCounters::parse(Path::new("m"), Version::V1, "cache 5\nrss 6\n").unwrap();
        assert_eq!(
            (c.get(StatKey::File), c.get(StatKey::Anon)),
            (Some(5), Some(6))
        );
        // A v2 name means nothing on v1, and `total_` means nothing on v2.
        let c = MemCounters::parse(Path::new("m"), Version::V1, "anon 5\n").unwrap();
        assert_eq!(c.get(StatKey::Anon), None);
        let c = MemCounters::parse(Path::new("m"), Version::V2, "total_anon 5\n").unwrap();
        assert_eq!(c.get(StatKey::Anon), None);
    }

    #[test]
    fn fill_with_remembered_lines_matches_parse() {
        let p = Path::new("memory.stat");
        let mut lines = StatLines::default();
        let mut c = MemCounters::default();
        // Twice each (the second time from the remembered lines), then texts whose lines
        // moved, and a version change.
        for (v, text) in [
            (Version::V1, V1_STAT),
            (Version::V1, V1_STAT),
            (Version::V1, "rss 6\ncache 5\ntotal_pgfault 9\npgfault 3\n"),
            (Version::V1, V1_STAT),
            (Version::V2, V2_STAT),
            (Version::V2, V2_STAT),
        ] {
            c.fill(&mut lines, p, v, text).unwrap();
            assert_eq!(c, MemCounters::parse(p, v, text).unwrap(), "{text:?}");
        }
        let mut c = MemCounters::parse(p, Version::V1, "pgfault 3\ntotal_pgfault 9\n").unwrap();
        assert_eq!(c.own(StatKey::Pgfault), Some(3));
        assert_eq!(c.hierarchical(StatKey::Pgfault), Some(9));
        assert_eq!(c.get(StatKey::Pgfault), Some(9));
        assert!(c.fill(&mut lines, p, Version::V2, "anon x\n").is_err());
    }

    #[test]
    fn the_key_map_is_consistent() {
        for k in StatKey::ALL {
            for v in [Version::V1, Version::V2] {
                if let Some(n) = k.name(v) {
                    assert_eq!(StatKey::of(v, n), Some((k, false)));
                }
            }
            assert_eq!(StatKey::ALL.get(k as usize), Some(&k));
        }
    }

    #[test]
    fn truncated_or_garbage_stat_is_an_error() {
        let p = Path::new("memory.stat");
        assert!(MemCounters::parse(p, Version::V2, "anon 2000\nfile").is_err());
        assert!(MemCounters::parse(p, Version::V2, "anon lots\n").is_err());
        assert!(MemCounters::parse(p, Version::V1, "\u{0}\u{1}\n").is_err());
        assert_eq!(
            MemCounters::parse(p, Version::V2, "").unwrap(),
            MemCounters::default()
        );
    }

    #[test]
    fn unparsable_stat_names_the_path() {
        let e =
            MemoryStat::parse(Path::new("/x/memory.stat"), Version::V2, "anon lots\n").unwrap_err();
        assert!(e.to_string().contains("/x/memory.stat"), "{e}");
    }
}
