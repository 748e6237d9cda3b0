//! From a process (or thread) to its cgroups, and to the init of its pid namespace.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout::{Controller, Hierarchies, Version};
use crate::parse;

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MembershipEntry {
    pub hierarchy_id: u32,
    /// Empty for the cgroup2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

/// A process's cgroup membership, as the kernel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub entries: Vec<MembershipEntry>,
}

impl Membership {
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut entries = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut it = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(cg)) = (it.next(), it.next(), it.next()) else {
                return Err(parse::parse_err(path, "a `id:controllers:path` line", line));
            };
            let hierarchy_id = id
                .parse()
                .map_err(|_| parse::parse_err(path, "a hierarchy id", line))?;
            let controllers = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_owned).collect()
            };
            entries.push(MembershipEntry {
                hierarchy_id,
                controllers,
                path: cg.to_owned(),
            });
        }
        Ok(Membership { entries })
    }

    /// Reads `/proc/<pid>/cgroup`. Works for thread ids too (FUSE reports the calling thread).
    pub fn of_pid(pid: i32) -> Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if is_gone(&e) => Err(Error::ProcessGone { pid }),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// The path of the v1 hierarchy holding `name` (e.g. `memory`, `name=systemd`).
    pub fn v1_path(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.hierarchy_id != 0 && e.controllers.iter().any(|c| c == name))
            .map(|e| e.path.as_str())
    }

    /// The cgroup2 path (`0::/path`).
    pub fn v2_path(&self) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.hierarchy_id == 0 && e.controllers.is_empty())
            .map(|e| e.path.as_str())
    }

    /// The path for `c` on these hierarchies.
    pub fn path_for(&self, h: &Hierarchies, c: Controller) -> Option<&str> {
        let m = h.mount_for(c)?;
        match m.version {
            Version::V1 => self.v1_path(c.v1_name()),
            Version::V2 => self.v2_path(),
        }
    }

    /// Drops a trailing `/init.scope`, which systemd puts a container's init into; the
    /// container's limits are on the parent (lxcfs does the same).
    pub fn strip_init_scope(mut self) -> Self {
        for e in &mut self.entries {
            if let Some(p) = e.path.strip_suffix("/init.scope") {
                e.path = if p.is_empty() {
                    "/".into()
                } else {
                    p.to_owned()
                };
            }
        }
        self
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// The inode of the pid namespace of `pid`, which identifies the namespace.
pub fn pidns_inode(pid: i32) -> Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    match fs::metadata(&path) {
        Ok(m) => Ok(m.ino()),
        Err(e) if is_gone(&e) => Err(Error::ProcessGone { pid }),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// Fields of `/proc/<pid>/status` that the pid-namespace walk needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStatus {
    pub tgid: i32,
    pub ppid: i32,
    /// The pid in each nested pid namespace, outermost first (`NSpid:`).
    pub nspid: Vec<i32>,
}

impl ProcStatus {
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut tgid = None;
        let mut ppid = None;
        let mut nspid = Vec::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("Tgid:") {
                tgid = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("PPid:") {
                ppid = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("NSpid:") {
                nspid = v
                    .split_ascii_whitespace()
                    .map(|x| x.parse().map_err(|_| parse::parse_err(path, "NSpid", line)))
                    .collect::<Result<_>>()?;
            }
        }
        match (tgid, ppid) {
            (Some(tgid), Some(ppid)) => Ok(ProcStatus { tgid, ppid, nspid }),
            _ => Err(parse::parse_err(path, "Tgid and PPid", "")),
        }
    }

    pub fn read(pid: i32) -> Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}/status"));
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if is_gone(&e) => Err(Error::ProcessGone { pid }),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// True when this process is pid 1 of its innermost pid namespace.
    pub fn is_ns_init(&self) -> bool {
        self.nspid.last() == Some(&1)
    }
}

/// The host pid of the init (pid 1) of the pid namespace `pid` lives in.
///
/// Walks up the parent chain while the parent is in the same namespace. A parent is always in
/// the same or an ancestor namespace, so "same" is "same `NSpid` depth", which needs no read of
/// `/proc/<pid>/ns` (denied for some processes even to root). A process that entered with
/// setns (an `exec` session) has a parent outside; then /proc is scanned for the namespace's
/// pid 1. Callers cache the result by [`pidns_inode`].
pub fn pidns_init(pid: i32) -> Result<i32> {
    let mut cur = ProcStatus::read(pid)?;
    let depth = cur.nspid.len();
    if cur.is_ns_init() {
        return Ok(cur.tgid);
    }
    // Bounded: no real process chain is this deep; it stops a pathological loop.
    for _ in 0..4096 {
        if cur.ppid <= 0 {
            break;
        }
        let parent = match ProcStatus::read(cur.ppid) {
            Ok(p) => p,
            Err(_) => break,
        };
        if parent.nspid.len() != depth {
            break;
        }
        cur = parent;
        if cur.is_ns_init() {
            return Ok(cur.tgid);
        }
    }
    let ns = pidns_inode(pid)?;
    scan_for_init(ns).ok_or(Error::ProcessGone { pid })
}

fn scan_for_init(ns: u64) -> Option<i32> {
    let dir = fs::read_dir("/proc").ok()?;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pidns_inode(pid).ok() != Some(ns) {
            continue;
        }
        if let Ok(st) = ProcStatus::read(pid) {
            if st.is_ns_init() {
                return Some(pid);
            }
        }
    }
    None
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn start_ticks(pid: i32) -> Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if is_gone(&e) => return Err(Error::ProcessGone { pid }),
        Err(source) => return Err(Error::Read { path, source }),
    };
    parse_start_ticks(&path, &text)
}

/// The fields of a `/proc/<pid>/stat` line after the command name, from field 3 (state) on.
/// The name is in parentheses and may itself contain spaces or ')': fields follow the last ')'.
fn stat_fields(text: &str) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_ascii_whitespace())
}

/// The state letter of a `/proc/<pid>/stat` line (`R`, `S`, `D`, …).
pub fn parse_state(text: &str) -> Option<char> {
    let f = stat_fields(text)?.next()?;
    let mut c = f.chars();
    match (c.next(), c.next()) {
        (Some(s), None) => Some(s),
        _ => None,
    }
}

pub(crate) fn parse_start_ticks(path: &Path, text: &str) -> Result<u64> {
    // After ')' comes field 3 (state); starttime is field 22, i.e. the 20th after the paren.
    stat_fields(text)
        .ok_or_else(|| parse::parse_err(path, "a stat line", text))?
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| parse::parse_err(path, "starttime", text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/577156d3\n1:cpu:/\n0::/\n";
    const LEGACY: &str =
        "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
    const UNIFIED: &str = "0::/system.slice/foo.service\n";

    #[test]
    fn parses_all_layouts() {
        let p = Path::new("/proc/1/cgroup");
        let m = Membership::parse(p, HYBRID).unwrap();
        assert_eq!(m.v1_path("memory"), Some("/process_api/577156d3"));
        assert_eq!(m.v1_path("name=systemd"), Some("/"));
        assert_eq!(m.v2_path(), Some("/"));
        let m = Membership::parse(p, LEGACY).unwrap();
        assert_eq!(m.v1_path("cpuacct"), Some("/docker/abc"));
        assert_eq!(m.v2_path(), None);
        let m = Membership::parse(p, UNIFIED).unwrap();
        assert_eq!(m.v2_path(), Some("/system.slice/foo.service"));
        assert!(Membership::parse(p, "garbage\n").is_err());
    }

    #[test]
    fn init_scope_is_stripped() {
        let p = Path::new("x");
        let m = Membership::parse(p, "0::/lxc/c1/init.scope\n")
            .unwrap()
            .strip_init_scope();
        assert_eq!(m.v2_path(), Some("/lxc/c1"));
        let m = Membership::parse(p, "0::/init.scope\n")
            .unwrap()
            .strip_init_scope();
        assert_eq!(m.v2_path(), Some("/"));
    }

    #[test]
    fn status_and_stat() {
        let p = Path::new("status");
        let st = ProcStatus::parse(
            p,
            "Name:\tsh\nTgid:\t4242\nPid:\t4242\nPPid:\t4000\nNSpid:\t4242\t1\n",
        )
        .unwrap();
        assert!(st.is_ns_init());
        assert_eq!(st.nspid, vec![4242, 1]);
        let stat = "4242 (my (odd) cmd) S 4000 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_ticks(p, stat).unwrap(), 987654);
        assert_eq!(parse_state(stat), Some('S'));
        assert_eq!(parse_state("1 (a) D 0"), Some('D'));
        // Truncated or garbage: no state, no panic.
        assert_eq!(parse_state("4242 (sh"), None);
        assert_eq!(parse_state("4242 (sh)"), None);
        assert_eq!(parse_state("4242 (sh) RR 1"), None);
        assert!(parse_start_ticks(p, "4242 (sh) S 1 2").is_err());
        assert!(parse_start_ticks(p, "").is_err());
    }

    #[test]
    fn live_self_lookup() {
        let me = std::process::id() as i32;
        assert!(!Membership::of_pid(me).unwrap().entries.is_empty());
        assert!(pidns_inode(me).unwrap() > 0);
        // In the host pid namespace, init is pid 1 (or the test runs in a container: some pid).
        assert!(pidns_init(me).unwrap() >= 1);
        assert!(matches!(
            Membership::of_pid(i32::MAX),
            Err(Error::ProcessGone { .. })
        ));
    }
}
