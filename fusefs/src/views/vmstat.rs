//! /proc/vmstat: the host's key set, each value the container's or 0.
//!
//! `vmstat` divides these counters by the container's age (from /proc/stat), so a host-wide
//! counter there reads as millions per second in a fresh container. Each host line becomes:
//! - `pgpgin` / `pgpgout`: KiB read / written by the container's block I/O (io.stat or
//!   blkio), as the kernel counts them (it adds a bio's sectors / 2 per submission);
//! - `nr_*` page gauges the cgroup tracks: its memory.stat bytes in pages;
//! - any other key memory.stat has under the same name (`pgfault`, `pgmajfault`, `pswpin`,
//!   `pswpout`, `pgscan*`, `pgsteal*`, `workingset_*`, `thp_*`…): the cgroup's value (v1:
//!   the hierarchical `total_<key>`);
//! - the dirty thresholds: the host's (configuration, not usage);
//! - everything else 0: host-wide events (allocator, compaction, NUMA, kswapd) that no cgroup
//!   file splits, which are none of the container's doing.

use std::fmt::Write;

use cgsight_cgroup::memory::{MemoryStat, StatKey};
use cgsight_cgroup::Version;

const PAGE: u64 = 4096;

/// The container's block I/O in bytes, summed over devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoBytes {
    pub read: u64,
    pub written: u64,
}

/// A page gauge of /proc/vmstat the cgroup tracks, in memory.stat bytes.
fn gauge(key: &str) -> Option<StatKey> {
    Some(match key {
        "nr_anon_pages" => StatKey::Anon,
        "nr_file_pages" => StatKey::File,
        "nr_active_anon" => StatKey::ActiveAnon,
        "nr_inactive_anon" => StatKey::InactiveAnon,
        "nr_active_file" => StatKey::ActiveFile,
        "nr_inactive_file" => StatKey::InactiveFile,
        "nr_unevictable" => StatKey::Unevictable,
        "nr_shmem" => StatKey::Shmem,
        "nr_mapped" => StatKey::FileMapped,
        "nr_dirty" => StatKey::FileDirty,
        "nr_writeback" => StatKey::FileWriteback,
        "nr_page_table_pages" => StatKey::Pagetables,
        _ => return None,
    })
}

/// The cgroup's event counter named `key` (v1: its hierarchical form first).
fn event(stat: &MemoryStat, key: &str) -> Option<u64> {
    if stat.version != Some(Version::V2) {
        let mut total = String::with_capacity(6 + key.len());
        total.push_str("total_");
        total.push_str(key);
        if let Some(v) = stat.get(&total) {
            return Some(v);
        }
    }
    stat.get(key)
}

/// The value shown for one host key.
fn value(key: &str, host_value: &str, stat: &MemoryStat, io: IoBytes) -> String {
    let v = match key {
        "pgpgin" => io.read / 1024,
        "pgpgout" => io.written / 1024,
        "nr_dirty_threshold" | "nr_dirty_background_threshold" => return host_value.to_owned(),
        // v1 names these for page charges, not block I/O: the io counters above are the meaning.
        k => match gauge(k) {
            Some(g) => stat.stat(g).unwrap_or(0) / PAGE,
            None => event(stat, k).unwrap_or(0),
        },
    };
    v.to_string()
}

pub fn render(host: &str, stat: &MemoryStat, io: IoBytes) -> String {
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(key), Some(hv)) = (it.next(), it.next()) else {
            continue;
        };
        let _ = writeln!(out, "{key} {}", value(key, hv, stat, io));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HOST: &str = "nr_free_pages 123456\nnr_anon_pages 500000\nnr_mapped 9000\nnr_dirty_threshold 777\npgpgin 99999999\npgpgout 88888888\npswpin 5\npswpout 6\npgalloc_normal 4242\npgfault 1000000\npgmajfault 3000\nworkingset_refault_file 17\n";

    fn show(text: &str) -> Vec<(String, String)> {
        text.lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').expect("key value");
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn get(text: &str, key: &str) -> String {
        show(text)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{key} in {text}"))
    }

    #[test]
    fn v2_counters_are_the_cgroups_and_host_events_are_zero() {
        let stat = MemoryStat::parse(
            Path::new("memory.stat"),
            Version::V2,
            "anon 8192000\nfile 40960\nfile_mapped 4096\npgfault 321\npgmajfault 2\npswpin 1\npswpout 3\nworkingset_refault_file 4\n",
        )
        .expect("parse");
        let out = render(
            HOST,
            &stat,
            IoBytes {
                read: 1 << 20,
                written: 3 << 19,
            },
        );
        // the host's key set and order
        let keys: Vec<String> = show(&out).into_iter().map(|(k, _)| k).collect();
        let host_keys: Vec<String> = show(HOST).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, host_keys);
        assert_eq!(get(&out, "pgpgin"), "1024");
        assert_eq!(get(&out, "pgpgout"), "1536");
        assert_eq!(get(&out, "nr_anon_pages"), "2000");
        assert_eq!(get(&out, "nr_mapped"), "1");
        assert_eq!(get(&out, "pgfault"), "321");
        assert_eq!(get(&out, "pgmajfault"), "2");
        assert_eq!(get(&out, "pswpin"), "1");
        assert_eq!(get(&out, "pswpout"), "3");
        assert_eq!(get(&out, "workingset_refault_file"), "4");
        assert_eq!(get(&out, "pgalloc_normal"), "0");
        assert_eq!(get(&out, "nr_free_pages"), "0");
        assert_eq!(get(&out, "nr_dirty_threshold"), "777");
    }

    #[test]
    fn v1_prefers_hierarchical_totals_and_ignores_its_charge_pgpgin() {
        let stat = MemoryStat::parse(
            Path::new("memory.stat"),
            Version::V1,
            "rss 4096\npgpgin 500\npgfault 10\ntotal_rss 8192\ntotal_pgpgin 900\ntotal_pgfault 20\n",
        )
        .expect("parse");
        let out = render(HOST, &stat, IoBytes::default());
        assert_eq!(get(&out, "nr_anon_pages"), "2");
        assert_eq!(get(&out, "pgfault"), "20");
        assert_eq!(get(&out, "pgpgin"), "0");
        assert_eq!(get(&out, "pswpin"), "0");
    }

    #[test]
    fn garbage_host_lines_are_skipped() {
        let out = render(
            "lonely\n\npgfault 5\n",
            &MemoryStat::default(),
            IoBytes::default(),
        );
        assert_eq!(out, "pgfault 0\n");
    }
}
