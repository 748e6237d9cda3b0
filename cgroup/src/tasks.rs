//! The task states of a cgroup subtree: how many threads run (R) or wait uninterruptibly (D),
//! for a container's loadavg and /proc/stat `procs_running` / `procs_blocked`.

use std::fmt::Write;
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;

use crate::cgroup::Cgroup;
use crate::layout::{Controller, Version};
use crate::process::{parse_state, ProcStatus};

/// Most cgroup directories walked per count: a bound against a pathological tree.
const MAX_DIRS: usize = 4096;

/// Thread counts over a cgroup and its descendants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    /// Runnable (`R`).
    pub running: u64,
    /// Uninterruptible (`D`).
    pub blocked: u64,
    /// Every thread that still existed when read.
    pub total: u64,
    /// The newest thread's pid in the container's own numbering (the last `NSpid`), never a
    /// host pid; 0 when there is none.
    pub last_pid: u64,
}

/// The thread list of a cgroup: v1 `tasks` (in the cpu, else memory hierarchy) or v2
/// `cgroup.threads`; None without either hierarchy.
fn thread_list(cg: &Cgroup) -> Option<(PathBuf, &'static str)> {
    match cg
        .dir(Controller::Cpu)
        .or_else(|| cg.dir(Controller::Memory))
    {
        Some(d) if d.version == Version::V1 => Some((d.dir.clone(), "tasks")),
        Some(d) => Some((d.dir.clone(), "cgroup.threads")),
        None => cg.unified.clone().map(|u| (u, "cgroup.threads")),
    }
}

/// Reads `path` into `buf` (cleared first), reusing its allocation across the walk.
fn read_into(path: &std::path::Path, buf: &mut String) -> bool {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .is_ok()
}

/// Calls `f(tid, buf)` with the text of `/proc/<tid>/<file>` for each thread of `cg` and its
/// descendants, until `f` returns false. Threads and cgroups that vanish mid-walk are skipped.
fn walk_threads(cg: &Cgroup, file_of_tid: &str, mut f: impl FnMut(u32, &str) -> bool) {
    let Some((dir, file)) = thread_list(cg) else {
        return;
    };
    let (mut list, mut text) = (String::new(), String::new());
    let mut proc_path = String::with_capacity(32);
    let mut stack = vec![dir];
    let mut seen_dirs = 0;
    while let Some(d) = stack.pop() {
        seen_dirs += 1;
        if seen_dirs > MAX_DIRS {
            break;
        }
        if read_into(&d.join(file), &mut list) {
            for tid in list.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                proc_path.clear();
                let _ = write!(proc_path, "/proc/{tid}/{file_of_tid}");
                if !read_into(std::path::Path::new(&proc_path), &mut text) {
                    continue;
                }
                if !f(tid, &text) {
                    return;
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// Counts the threads of `cg` and its descendants by state: a sample, as the kernel's own is.
pub fn count(cg: &Cgroup) -> TaskCounts {
    let mut c = TaskCounts::default();
    let mut newest = 0u32;
    walk_threads(cg, "stat", |tid, stat| {
        c.total += 1;
        newest = newest.max(tid);
        match parse_state(stat) {
            Some('R') => c.running += 1,
            Some('D') => c.blocked += 1,
            _ => {}
        }
        true
    });
    if newest > 0 {
        c.last_pid = ProcStatus::read(newest as i32)
            .ok()
            .and_then(|s| s.nspid.last().copied())
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(0);
    }
    c
}

/// The run-queue wait of one thread in ns: the second field of `/proc/<tid>/schedstat`
/// (`<on-cpu ns> <waiting ns> <timeslices>`); None if garbled.
pub fn parse_run_delay(schedstat: &str) -> Option<u64> {
    schedstat.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The summed run-queue wait (ns) of the live threads of `cg` and its descendants: CPU time
/// they were runnable and did not get. None past `max_threads` threads (too costly to sum on
/// every read) or without a thread list.
pub fn run_delay_ns(cg: &Cgroup, max_threads: usize) -> Option<u64> {
    let (mut sum, mut n) = (0u64, 0usize);
    let mut over = false;
    walk_threads(cg, "schedstat", |_, text| {
        n += 1;
        if n > max_threads {
            over = true;
            return false;
        }
        sum = sum.saturating_add(parse_run_delay(text).unwrap_or(0));
        true
    });
    (!over && n > 0).then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hierarchies;

    #[test]
    fn run_delay_is_the_second_schedstat_field() {
        assert_eq!(parse_run_delay("123456 7890 12\n"), Some(7890));
        assert_eq!(parse_run_delay("123456\n"), None);
        assert_eq!(parse_run_delay("a b c"), None);
    }

    #[test]
    fn our_own_cgroup_has_us_running() {
        let h = Hierarchies::detect().expect("cgroup hierarchies");
        let cg = Cgroup::of_pid(&h, std::process::id() as i32).expect("our cgroup");
        let c = count(&cg);
        // This thread is running while it reads its own stat.
        assert!(c.total >= 1 && c.running >= 1, "{c:?}");
        assert!(c.running + c.blocked <= c.total);
        assert!(c.last_pid > 0);
        assert_eq!(count(&Cgroup::default()), TaskCounts::default());
    }
}
