//! /proc/meminfo: the container's memory, in the kernel's layout.
//!
//! MemTotal = min(host, effective limit); MemFree = MemTotal − usage (≥ 0); MemAvailable =
//! MemFree + active_file + inactive_file (+ slab_reclaimable on v2), ≤ MemTotal. Lines with a
//! cgroup equivalent come from memory.stat, parsed by exact key; host-wide usage lines that
//! would leak the host's state are zeroed; configuration lines (HugePages_*, Hugepagesize,
//! VmallocTotal) stay the host's.

use std::fmt::Write;

pub use cgsight_cgroup::memory::{MemCounters, StatKey};

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
    /// memory.stat, v1 and v2 keys mapped by `cgsight_cgroup`.
    pub stat: MemCounters,
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

/// The container's headline numbers in kB: what /proc/meminfo's first lines and sysinfo(2)
/// both report, so `free` (either kind) and `sysinfo()` agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemNumbers {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub shmem: u64,
    /// Always 0: no cgroup counts buffers.
    pub buffers: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// MemTotal, MemFree, MemAvailable, Shmem, Buffers and swap of the container, from the host's
/// meminfo text (for its MemTotal and SwapTotal) and the cgroup's facts.
pub fn numbers(host: &str, f: &MemFacts) -> MemNumbers {
    numbers_of(HostTotals::of(host), f)
}

/// The host's MemTotal and SwapTotal in kB: all of its meminfo the numbers need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostTotals {
    pub mem_kb: u64,
    pub swap_kb: u64,
}

impl HostTotals {
    pub fn of(host: &str) -> HostTotals {
        HostTotals {
            mem_kb: super::field(host, "MemTotal").unwrap_or(0),
            swap_kb: super::field(host, "SwapTotal").unwrap_or(0),
        }
    }
}

/// [`numbers`] from the host's totals parsed once (sysinfo(2) asks on every call).
pub fn numbers_of(host: HostTotals, f: &MemFacts) -> MemNumbers {
    let (host_total, host_swap) = (host.mem_kb, host.swap_kb);
    let kb = |b: u64| b / 1024;
    let b = |k: StatKey| f.stat.bytes(k);
    let total = match f.limit {
        Some(l) if host_total > 0 => host_total.min(kb(l)),
        Some(l) => kb(l),
        None => host_total,
    };
    let free = total.saturating_sub(kb(f.usage));
    // v1 reports no slab: its reclaimable slab is 0 here.
    let reclaimable =
        b(StatKey::ActiveFile) + b(StatKey::InactiveFile) + b(StatKey::SlabReclaimable);
    let (swap_total, swap_free) = swap_kb(host_swap, f);
    MemNumbers {
        total,
        free,
        available: (free + kb(reclaimable)).min(total),
        shmem: kb(b(StatKey::Shmem)),
        buffers: 0,
        swap_total,
        swap_free,
    }
}

pub fn render(host: &str, f: &MemFacts) -> String {
    let kb = |b: u64| b / 1024;
    let b = |k: StatKey| f.stat.bytes(k);
    let MemNumbers {
        total,
        free,
        available: avail,
        shmem,
        buffers,
        swap_total,
        swap_free,
    } = numbers(host, f);
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
            "Buffers" => buffers,
            "SwapCached" => 0,
            "Cached" => kb(b(StatKey::File)),
            "Active" => kb(b(StatKey::ActiveAnon) + b(StatKey::ActiveFile)),
            "Inactive" => kb(b(StatKey::InactiveAnon) + b(StatKey::InactiveFile)),
            "Active(anon)" => kb(b(StatKey::ActiveAnon)),
            "Inactive(anon)" => kb(b(StatKey::InactiveAnon)),
            "Active(file)" => kb(b(StatKey::ActiveFile)),
            "Inactive(file)" => kb(b(StatKey::InactiveFile)),
            "Unevictable" => kb(b(StatKey::Unevictable)),
            "SwapTotal" => swap_total,
            "SwapFree" => swap_free,
            "Dirty" => kb(b(StatKey::FileDirty)),
            "Writeback" => kb(b(StatKey::FileWriteback)),
            "AnonPages" => kb(b(StatKey::Anon)),
            "Mapped" => kb(b(StatKey::FileMapped)),
            "Shmem" => shmem,
            "KReclaimable" | "SReclaimable" => kb(b(StatKey::SlabReclaimable)),
            "Slab" => kb(b(StatKey::Slab)),
            "SUnreclaim" => kb(b(StatKey::SlabUnreclaimable)),
            "KernelStack" => kb(b(StatKey::KernelStack)),
            "PageTables" => kb(b(StatKey::Pagetables)),
            "AnonHugePages" => kb(b(StatKey::AnonThp)),
            // The kernel's formula with the default 50 % overcommit ratio.
            "CommitLimit" => swap_total + total / 2,
            "Committed_AS" => kb(b(StatKey::Anon)) + swap_used,
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
    use cgsight_cgroup::Version;
    use std::path::Path;

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
            stat: MemCounters::parse(Path::new("memory.stat"), Version::V1, V1_STAT).unwrap(),
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
            stat: MemCounters::parse(Path::new("memory.stat"), Version::V2, V2_STAT).unwrap(),
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
        // sysinfo(2) answers from `numbers`: the same values as the file, line for line.
        let n = numbers(HOST, &f);
        let keys = [
            "MemTotal",
            "MemFree",
            "MemAvailable",
            "Shmem",
            "Buffers",
            "SwapTotal",
            "SwapFree",
        ];
        let vals = [
            n.total,
            n.free,
            n.available,
            n.shmem,
            n.buffers,
            n.swap_total,
            n.swap_free,
        ];
        for (k, v) in keys.iter().zip(vals) {
            assert_eq!(get(&out, k), v, "{k}");
        }
    }

    #[test]
    fn available_never_exceeds_total_and_no_limit_keeps_host_total() {
        let f = MemFacts {
            limit: None,
            usage: 0,
            stat: MemCounters::parse(Path::new("memory.stat"), Version::V2, V2_STAT).unwrap(),
            swap: None,
        };
        let out = render(HOST, &f);
        assert_eq!(get(&out, "MemTotal"), 24575212);
        assert_eq!(get(&out, "MemAvailable"), 24575212);
        assert_eq!(get(&out, "SwapTotal"), 0);
    }
}
