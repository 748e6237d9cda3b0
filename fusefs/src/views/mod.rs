//! The views: pure functions from host text and cgroup facts to file contents.
//!
//! Each module renders one file. They take plain values (no I/O), so every formula is unit
//! tested with fixtures for cgroup v1 and v2; `crate::fs` gathers the facts per request.

pub mod cpuinfo;
pub mod cpus;
pub mod diskstats;
pub mod loadavg;
pub mod meminfo;
pub mod stat;
pub mod swaps;
pub mod topology;
pub mod uptime;
pub mod vmstat;

/// The value of a `Key:   123 kB` line of a /proc file, in the file's unit.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_ascii_whitespace().next()?.parse().ok()
    })
}
