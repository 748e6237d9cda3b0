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

/// Counts the threads of `cg` and its descendants by state. Threads and cgroups that vanish
/// mid-walk are skipped: the counts are a sample, as the kernel's own are.
pub fn count(cg: &Cgroup) -> TaskCounts {
    let mut c = TaskCounts::default();
    let Some((dir, file)) = thread_list(cg) else {
        return c;
    };
    let (mut list, mut stat) = (String::new(), String::new());
    let mut proc_path = String::with_capacity(32);
    let mut newest = 0u32;
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
                let _ = write!(proc_path, "/proc/{tid}/stat");
                if !read_into(std::path::Path::new(&proc_path), &mut stat) {
                    continue;
                }
                c.total += 1;
                newest = newest.max(tid);
                match parse_state(&stat) {
                    Some('R') => c.running += 1,
                    Some('D') => c.blocked += 1,
                    _ => {}
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
    if newest > 0 {
        c.last_pid = ProcStatus::read(newest as i32)
            .ok()
            .and_then(|s| s.nspid.last().copied())
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(0);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hierarchies;

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
