//! /proc/meminfo: the container's memory, in the kernel's layout.
//!
//! MemTotal = min(host, effective limit); MemFree = MemTotal − usage (≥ 0); MemAvailable =
//! MemFree + active_file + inactive_file (+ slab_reclaimable on v2), ≤ MemTotal. Lines with a
//! cgroup equivalent come from memory.stat, parsed by exact key; host-wide usage lines that
//! would leak the host's state are zeroed; configuration lines (HugePages_*, Hugepagesize,
//! VmallocTotal) stay the host's.

use std::fmt::Write;

/// The memory.stat values the view uses, in bytes (v1 `total_*` or v2 keys, already mapped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStat {
    pub v2: bool,
    pub anon: u64,
    pub file: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    pub unevictable: u64,
    pub shmem: u64,
    pub mapped: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub anon_thp: u64,
    pub slab: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
    pub kernel_stack: u64,
    pub pagetables: u64,
}

impl MemStat {
    /// Parses memory.stat text exactly (no prefix matching). v1 prefers the hierarchical
    /// `total_<key>`, which covers the container's sub-cgroups.
    pub fn parse(text: &str, v2: bool) -> MemStat {
        let mut s = MemStat {
            v2,
            ..Default::default()
        };
        // v1 lists `key` before `total_key`; totals override when present.
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            let (k, is_total) = match k.strip_prefix("total_") {
                Some(k) if !v2 => (k, true),
                _ => (k, false),
            };
            let slot = match (v2, k) {
                (false, "rss") | (true, "anon") => &mut s.anon,
                (false, "cache") | (true, "file") => &mut s.file,
                (_, "active_anon") => &mut s.active_anon,
                (_, "inactive_anon") => &mut s.inactive_anon,
                (_, "active_file") => &mut s.active_file,
                (_, "inactive_file") => &mut s.inactive_file,
                (_, "unevictable") => &mut s.unevictable,
                (_, "shmem") => &mut s.shmem,
                (false, "mapped_file") | (true, "file_mapped") => &mut s.mapped,
                (false, "dirty") | (true, "file_dirty") => &mut s.dirty,
                (false, "writeback") | (true, "file_writeback") => &mut s.writeback,
                (false, "rss_huge") | (true, "anon_thp") => &mut s.anon_thp,
                (true, "slab") => &mut s.slab,
                (true, "slab_reclaimable") => &mut s.slab_reclaimable,
                (true, "slab_unreclaimable") => &mut s.slab_unreclaimable,
                (true, "kernel_stack") => &mut s.kernel_stack,
                (true, "pagetables") => &mut s.pagetables,
                _ => continue,
            };
            if is_total || v2 || *slot == 0 {
                *slot = v;
            }
        }
        s
    }
}

/// Swap facts: `None` when the kernel does not account swap for cgroups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwapFacts {
    /// Effective swap-only limit in bytes (v1 memsw − mem; v2 memory.swap.max); None = no limit.
    pub limit: Option<u64>,
    pub usage: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemFacts {
    /// Effective (min over ancestors) limit in bytes; None = unlimited.
    pub limit: Option<u64>,
    pub usage: u64,
    pub stat: MemStat,
    pub swap: Option<SwapFacts>,
}

/// SwapTotal and SwapFree in kB for this container (shared with /proc/swaps).
pub fn swap_kb(host_swap_total_kb: u64, f: &MemFacts) -> (u64, u64) {
    match &f.swap {
        None => (0, 0),
        Some(s) => {
            let total = match s.limit {
                Some(l) => host_swap_total_kb.min(l / 1024),
                None => host_swap_total_kb,
            };
            let used = (s.usage / 1024).min(total);
            (total, total - used)
        }
    }
}

pub fn render(host: &str, f: &MemFacts) -> String {
    let host_total = super::field(host, "MemTotal").unwrap_or(0);
    let host_swap = super::field(host, "SwapTotal").unwrap_or(0);
    let kb = |b: u64| b / 1024;
    let s = &f.stat;
    let total = match f.limit {
        Some(l) if host_total > 0 => host_total.min(kb(l)),
        Some(l) => kb(l),
        None => host_total,
    };
    let free = total.saturating_sub(kb(f.usage));
    let reclaimable = s.active_file + s.inactive_file + if s.v2 { s.slab_reclaimable } else { 0 };
    let avail = (free + kb(reclaimable)).min(total);
    let (swap_total, swap_free) = swap_kb(host_swap, f);
    let swap_used = swap_total - swap_free;

    let mut out = String::with_capacity(host.len() + 64);
    for line in host.lines() {
        let Some((name, _)) = line.split_once(':') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let v = match name {
            "MemTotal" => total,
            "MemFree" => free,
            "MemAvailable" => avail,
            "Buffers" | "SwapCached" => 0,
            "Cached" => kb(s.file),
            "Active" => kb(s.active_anon + s.active_file),
            "Inactive" => kb(s.inactive_anon + s.inactive_file),
            "Active(anon)" => kb(s.active_anon),
            "Inactive(anon)" => kb(s.inactive_anon),
            "Active(file)" => kb(s.active_file),
            "Inactive(file)" => kb(s.inactive_file),
            "Unevictable" => kb(s.unevictable),
            "SwapTotal" => swap_total,
            "SwapFree" => swap_free,
            "Dirty" => kb(s.dirty),
            "Writeback" => kb(s.writeback),
            "AnonPages" => kb(s.anon),
            "Mapped" => kb(s.mapped),
            "Shmem" => kb(s.shmem),
            "KReclaimable" | "SReclaimable" => kb(s.slab_reclaimable),
            "Slab" => kb(s.slab),
            "SUnreclaim" => kb(s.slab_unreclaimable),
            "KernelStack" => kb(s.kernel_stack),
            "PageTables" => kb(s.pagetables),
            "AnonHugePages" => kb(s.anon_thp),
            // The kernel's formula with the default 50 % overcommit ratio.
            "CommitLimit" => swap_total + total / 2,
            "Committed_AS" => kb(s.anon) + swap_used,
            // Host-wide usage with no per-cgroup source: zero rather than leak the host's.
            "Mlocked" | "Zswap" | "Zswapped" | "NFS_Unstable" | "Bounce" | "WritebackTmp"
            | "VmallocUsed" | "VmallocChunk" | "Percpu" | "HardwareCorrupted"
            | "ShmemHugePages" | "ShmemPmdMapped" | "FileHugePages" | "FilePmdMapped"
            | "SecPageTables" | "Unaccepted" | "CmaTotal" | "CmaFree" | "DirectMap4k"
            | "DirectMap2M" | "DirectMap1G" => 0,
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        let label_len = name.len() + 1;
        out.push_str(name);
        out.push(':');
        // The kernel pads the label to 16 columns and the value to 8.
        for _ in label_len..16 {
            out.push(' ');
        }
        let _ = writeln!(out, "{v:>8} kB");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const HOST: &str = "MemTotal:       24575212 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\nBuffers:          100000 kB\nCached:          1500000 kB\nSwapCached:            0 kB\nActive:           900000 kB\nInactive:         800000 kB\nActive(anon):     300000 kB\nInactive(anon):        0 kB\nActive(file):     600000 kB\nInactive(file):   800000 kB\nUnevictable:           0 kB\nMlocked:            1234 kB\nSwapTotal:       1048576 kB\nSwapFree:        1048576 kB\nDirty:               100 kB\nWriteback:             0 kB\nAnonPages:        290000 kB\nMapped:           200000 kB\nShmem:             10000 kB\nKReclaimable:      50000 kB\nSlab:             100000 kB\nSReclaimable:      50000 kB\nSUnreclaim:        50000 kB\nKernelStack:        8000 kB\nPageTables:         5000 kB\nCommitLimit:    13336182 kB\nCommitted_AS:    2000000 kB\nVmallocTotal:   34359738367 kB\nAnonHugePages:     40960 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\nDirectMap4k:      200000 kB\n";

    const V1_STAT: &str = "cache 0\nrss 1\nrss_huge 2\nshmem 0\nmapped_file 0\ntotal_cache 52428800\ntotal_rss 104857600\ntotal_rss_huge 4194304\ntotal_shmem 1048576\ntotal_mapped_file 2097152\ntotal_dirty 8192\ntotal_writeback 4096\ntotal_inactive_anon 1048576\ntotal_active_anon 103809024\ntotal_inactive_file 31457280\ntotal_active_file 20971520\ntotal_unevictable 0\n";
    const V2_STAT: &str = "anon 104857600\nfile 52428800\nfile_mapped 2097152\nfile_dirty 8192\nfile_writeback 4096\nanon_thp 4194304\nshmem 1048576\ninactive_anon 1048576\nactive_anon 103809024\ninactive_file 31457280\nactive_file 20971520\nunevictable 0\nslab_reclaimable 1048576\nslab_unreclaimable 524288\nslab 1572864\nkernel_stack 65536\npagetables 131072\n";

    fn get(text: &str, k: &str) -> u64 {
        crate::views::field(text, k).unwrap_or_else(|| panic!("{k} missing in\n{text}"))
    }

    #[test]
    fn v1_exact_keys_and_formulas() {
        let f = MemFacts {
            limit: Some(256 << 20),
            usage: 160 << 20,
            stat: MemStat::parse(V1_STAT, false),
            swap: Some(SwapFacts {
                limit: Some(0),
                usage: 0,
            }),
        };
        let out = render(HOST, &f);
        assert_eq!(get(&out, "MemTotal"), 262144);
        assert_eq!(get(&out, "MemFree"), 262144 - 163840);
        // free + active_file + inactive_file, no slab on v1
        assert_eq!(get(&out, "MemAvailable"), 98304 + 20480 + 30720);
        assert_eq!(get(&out, "Cached"), 51200);
        assert_eq!(get(&out, "AnonHugePages"), 4096);
        assert_eq!(get(&out, "Mapped"), 2048);
        assert_eq!(get(&out, "Dirty"), 8);
        assert_eq!(get(&out, "Writeback"), 4);
        assert_eq!(get(&out, "Mlocked"), 0);
        assert_eq!(get(&out, "SwapTotal"), 0);
        assert_eq!(get(&out, "DirectMap4k"), 0);
        assert_eq!(get(&out, "HugePages_Total"), 0);
        assert!(out.contains("MemTotal:         262144 kB\n"), "{out}");
        assert!(out.contains("VmallocTotal:   34359738367 kB\n"));
        assert_eq!(out.lines().count(), HOST.lines().count());
    }

    #[test]
    fn v2_exact_keys_slab_and_clamps() {
        let f = MemFacts {
            limit: Some(100 << 20),
            // usage above the limit (transiently possible): MemFree clamps at 0
            usage: 120 << 20,
            stat: MemStat::parse(V2_STAT, true),
            swap: Some(SwapFacts {
                limit: Some(64 << 20),
                usage: 80 << 20,
            }),
        };
        let out = render(HOST, &f);
        assert_eq!(get(&out, "MemTotal"), 102400);
        assert_eq!(get(&out, "MemFree"), 0);
        assert_eq!(get(&out, "MemAvailable"), 20480 + 30720 + 1024);
        assert_eq!(get(&out, "Mapped"), 2048);
        assert_eq!(get(&out, "AnonHugePages"), 4096);
        assert_eq!(get(&out, "Slab"), 1536);
        assert_eq!(get(&out, "SReclaimable"), 1024);
        assert_eq!(get(&out, "KernelStack"), 64);
        assert_eq!(get(&out, "SwapTotal"), 65536);
        assert_eq!(get(&out, "SwapFree"), 0);
    }

    #[test]
    fn available_never_exceeds_total_and_no_limit_keeps_host_total() {
        let f = MemFacts {
            limit: None,
            usage: 0,
            stat: MemStat::parse(V2_STAT, true),
            swap: None,
        };
        let out = render(HOST, &f);
        assert_eq!(get(&out, "MemTotal"), 24575212);
        assert_eq!(get(&out, "MemAvailable"), 24575212);
        assert_eq!(get(&out, "SwapTotal"), 0);
    }
}
