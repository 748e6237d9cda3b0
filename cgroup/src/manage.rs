//! Creating cgroups, applying limits, attaching processes, and kill-and-remove.
//!
//! Kept behind our own API (not cgroups-rs or libcgroups) because a launcher needs exactly:
//! only the hierarchies it asks for (no name=systemd dirs), a v1 cpuset filled from its parent,
//! a kill that leaves nothing running (cgroups-rs's destroy moves tasks to the root instead),
//! and errors that name the file and value.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cgroup::{read_procs, Cgroup};
use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::layout::{Controller, Hierarchies, Version};
use crate::parse::{self, join};

/// Every controller a container cgroup lives in: the ones limits use, plus cpuacct and io for
/// accounting, freezer for a race-free kill on v1, and devices for the device allow-list on v1
/// (see [`crate::devices`]; a v1 devices cgroup allows everything until rules are applied).
pub const CONTAINER_CONTROLLERS: [Controller; 8] = [
    Controller::Cpu,
    Controller::Cpuacct,
    Controller::Cpuset,
    Controller::Memory,
    Controller::Io,
    Controller::Pids,
    Controller::Freezer,
    Controller::Devices,
];

/// A read limit that never binds (1 TiB/s): it only switches blk-throttle on for a device.
const NON_BINDING_BPS: u64 = 1 << 40;

/// The `MAJ:MIN` of every whole disk under `sys_block` backed by a device (not loop, ram, zram
/// or other virtual queues, which have no `device` link).
pub fn whole_disks(sys_block: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| fs::read_to_string(e.path().join("dev")).ok())
        .map(|d| d.trim().to_owned())
        .filter(|d| {
            d.split_once(':')
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
        })
        .collect();
    out.sort();
    out
}

/// Since Linux 6.10, blk-throttle (whose statistics are v1 blkio's only per-cgroup I/O
/// counters) is set up on a disk's queue only when some cgroup first sets a limit on it: until
/// then every container shows 0 bytes read and written. A never-binding read limit on each
/// whole disk sets it up (cgroup v2's io.stat needs nothing). Per container rather than once,
/// so it does not hang on a parent cgroup someone may reset. Best effort: a device that
/// refuses keeps its counters off, logged.
fn activate_v1_io_accounting(blkio_dir: &Path, sys_block: &Path) {
    let f = join(blkio_dir, "blkio.throttle.read_bps_device");
    for dev in whole_disks(sys_block) {
        if let Err(e) = fs::write(&f, format!("{dev} {NON_BINDING_BPS}")) {
            tracing::debug!(device = %dev, path = %f.display(), error = %e, "blkio accounting stays off");
        }
    }
}

/// Limits to apply. `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Memory plus swap in bytes, docker's `--memory-swap`. `Some(None)` = unlimited swap.
    pub memory_swap: Option<Option<u64>>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    /// v1 shares (2..262144); converted to a v2 weight where needed.
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<CpuList>,
    pub cpuset_mems: Option<CpuList>,
    pub pids_max: Option<u64>,
}

impl Resources {
    /// The controllers a container cgroup is created in: the limited ones plus accounting.
    pub fn controllers(&self) -> Vec<Controller> {
        CONTAINER_CONTROLLERS.to_vec()
    }
}

/// A cgroup that cgsight manages: created (or opened) by us, removed by us.
#[derive(Clone, Debug, Serialize)]
pub struct Managed {
    cgroup: Cgroup,
    /// Distinct directories of this cgroup across hierarchies (co-mounted controllers share one).
    leaf_dirs: Vec<PathBuf>,
}

/// Default rights for a new cgroup directory.
fn mkdir(p: &Path) -> Result<bool> {
    match fs::create_dir(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::Fs {
            op: "creating cgroup",
            path: p.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

impl Managed {
    /// Creates `path` (e.g. `/cgsight/<id>`) in the hierarchies of `controllers`, plus the
    /// cgroup2 tree on hybrid hosts (for cgroup.kill and PSI). Partially created directories
    /// are removed again on error.
    pub fn create(h: &Hierarchies, path: &str, controllers: &[Controller]) -> Result<Self> {
        let full = Cgroup::at_path(h, path);
        let mut cg = Cgroup {
            path: full.path.clone(),
            dirs: Default::default(),
            unified: full.unified.clone(),
        };
        for c in controllers {
            if let Some(d) = full.dir(*c) {
                cg.dirs.insert(*c, d.clone());
            }
        }
        let mut created: Vec<PathBuf> = Vec::new();
        let result = Self::create_dirs(h, &cg, controllers, &mut created);
        if let Err(e) = result {
            for d in created.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            return Err(e);
        }
        Ok(Self::from_cgroup(cg))
    }

    fn create_dirs(
        h: &Hierarchies,
        cg: &Cgroup,
        controllers: &[Controller],
        created: &mut Vec<PathBuf>,
    ) -> Result<()> {
        // v2: the parent levels must delegate the controllers we need.
        if let (Some(u), Some(udir)) = (h.unified(), &cg.unified) {
            let wanted: Vec<&str> = controllers
                .iter()
                .filter(|c| h.mount_for(**c).map(|m| m.version) == Some(Version::V2))
                .filter_map(|c| c.v2_name())
                .collect();
            let levels: Vec<&Path> = udir
                .ancestors()
                .skip(1)
                .take_while(|p| p.starts_with(&u.mount_point))
                .collect();
            for lvl in levels.iter().rev() {
                if !lvl.exists() && mkdir(lvl)? {
                    created.push(lvl.to_path_buf());
                }
                enable_subtree(lvl, &wanted)?;
            }
            if mkdir(udir)? {
                created.push(udir.clone());
            }
        }
        let mut seen: Vec<&Path> = Vec::new();
        for d in cg.dirs.values().filter(|d| d.version == Version::V1) {
            if seen.contains(&d.dir.as_path()) {
                continue;
            }
            seen.push(&d.dir);
            // Create each missing level, top-down, so cpuset levels can be filled in order.
            let levels: Vec<&Path> = d
                .dir
                .ancestors()
                .take_while(|p| p.starts_with(&d.mount_point) && *p != d.mount_point)
                .collect();
            for lvl in levels.iter().rev() {
                if mkdir(lvl)? {
                    created.push(lvl.to_path_buf());
                }
                if lvl.join("cpuset.cpus").exists() {
                    fill_cpuset_from_parent(lvl)?;
                }
            }
        }
        Ok(())
    }

    /// Opens an existing cgsight cgroup by path (e.g. to remove a container whose supervisor
    /// died). Hierarchies where it does not exist are skipped.
    pub fn open(h: &Hierarchies, path: &str) -> Self {
        let mut cg = Cgroup::at_path(h, path);
        cg.dirs.retain(|_, d| d.dir.is_dir());
        if cg.unified.as_ref().is_some_and(|u| !u.is_dir()) {
            cg.unified = None;
        }
        Self::from_cgroup(cg)
    }

    fn from_cgroup(cgroup: Cgroup) -> Self {
        let mut leaf_dirs: Vec<PathBuf> = Vec::new();
        for d in cgroup.dirs.values() {
            if !leaf_dirs.contains(&d.dir) {
                leaf_dirs.push(d.dir.clone());
            }
        }
        if let Some(u) = &cgroup.unified {
            if !leaf_dirs.contains(u) {
                leaf_dirs.push(u.clone());
            }
        }
        Managed { cgroup, leaf_dirs }
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.leaf_dirs
    }

    pub fn apply(&self, r: &Resources) -> Result<()> {
        if let Some(d) = self.cgroup.dir(Controller::Cpuset) {
            let (cf, mf) = ("cpuset.cpus", "cpuset.mems");
            if let Some(c) = &r.cpuset_cpus {
                write(&join(&d.dir, cf), &c.to_string())?;
            }
            if let Some(m) = &r.cpuset_mems {
                write(&join(&d.dir, mf), &m.to_string())?;
            }
        }
        if let Some(d) = self.cgroup.dir(Controller::Memory) {
            match d.version {
                Version::V1 => {
                    let memsw = join(&d.dir, "memory.memsw.limit_in_bytes");
                    let has_memsw = memsw.exists();
                    // memsw must stay ≥ memory: lift it first, set memory, then set memsw.
                    if has_memsw && (r.memory.is_some() || r.memory_swap.is_some()) {
                        write(&memsw, "-1")?;
                    }
                    if let Some(m) = r.memory {
                        write(&join(&d.dir, "memory.limit_in_bytes"), &m.to_string())?;
                    }
                    match (r.memory_swap, has_memsw) {
                        (Some(Some(total)), true) => write(&memsw, &total.to_string())?,
                        (Some(Some(_)), false) => {
                            return Err(Error::Invalid {
                                path: memsw,
                                message: "swap accounting is off in this kernel (boot with swapaccount=1), so a memory+swap limit cannot be set".into(),
                            })
                        }
                        _ => {}
                    }
                }
                Version::V2 => {
                    if let Some(m) = r.memory {
                        write(&join(&d.dir, "memory.max"), &m.to_string())?;
                    }
                    if let Some(sw) = r.memory_swap {
                        let swap = match (sw, r.memory) {
                            (Some(total), Some(m)) => total.saturating_sub(m).to_string(),
                            (Some(total), None) => total.to_string(),
                            (None, _) => "max".into(),
                        };
                        let p = join(&d.dir, "memory.swap.max");
                        if p.exists() {
                            write(&p, &swap)?;
                        }
                    }
                }
            }
        }
        if let Some(d) = self.cgroup.dir(Controller::Cpu) {
            match d.version {
                Version::V1 => {
                    if let Some(p) = r.cpu_period_us {
                        write(&join(&d.dir, "cpu.cfs_period_us"), &p.to_string())?;
                    }
                    if let Some(q) = r.cpu_quota_us {
                        write(&join(&d.dir, "cpu.cfs_quota_us"), &q.to_string())?;
                    }
                    if let Some(s) = r.cpu_shares {
                        write(&join(&d.dir, "cpu.shares"), &s.to_string())?;
                    }
                }
                Version::V2 => {
                    if r.cpu_quota_us.is_some() || r.cpu_period_us.is_some() {
                        let q = r
                            .cpu_quota_us
                            .map_or_else(|| "max".to_string(), |q| q.to_string());
                        let p = r.cpu_period_us.unwrap_or(100_000);
                        write(&join(&d.dir, "cpu.max"), &format!("{q} {p}"))?;
                    }
                    if let Some(s) = r.cpu_shares {
                        let w = 1 + (s.clamp(2, 262144) - 2) * 9999 / 262142;
                        write(&join(&d.dir, "cpu.weight"), &w.to_string())?;
                    }
                }
            }
        }
        if let (Some(d), Some(max)) = (self.cgroup.dir(Controller::Pids), r.pids_max) {
            write(&join(&d.dir, "pids.max"), &max.to_string())?;
        }
        if let Some(d) = self
            .cgroup
            .dir(Controller::Io)
            .filter(|d| d.version == Version::V1)
        {
            activate_v1_io_accounting(&d.dir, Path::new("/sys/block"));
        }
        Ok(())
    }

    /// Moves the whole process `pid` into this cgroup in every hierarchy.
    pub fn attach(&self, pid: i32) -> Result<()> {
        let v = pid.to_string();
        for d in &self.leaf_dirs {
            write(&join(d, "cgroup.procs"), &v)?;
        }
        Ok(())
    }

    /// All processes in the cgroup and its descendants, in every hierarchy.
    pub fn all_procs(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in &self.leaf_dirs {
            collect_procs(d, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills every process in the cgroup and removes it (with any sub-cgroups). Nothing escapes:
    /// v2/hybrid use `cgroup.kill`; v1 freezes first so a fork bomb cannot outrun the kill loop.
    pub fn kill_and_remove(&self) -> Result<()> {
        if self.leaf_dirs.iter().all(|d| !d.exists()) {
            return Ok(());
        }
        self.kill_all(Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in &self.leaf_dirs {
            remove_tree(d, deadline)?;
        }
        Ok(())
    }

    /// SIGKILLs everything in the cgroup and waits until it is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        if let Some(u) = &self.cgroup.unified {
            let k = join(u, "cgroup.kill");
            if k.exists() {
                let _ = write(&k, "1");
            }
        }
        let freezer = self
            .cgroup
            .dir(Controller::Freezer)
            .filter(|d| d.version == Version::V1);
        let deadline = Instant::now() + timeout;
        let mut attempts = 0u32;
        let mut nap = Duration::from_millis(1);
        loop {
            let procs = self.all_procs();
            if procs.is_empty() {
                return Ok(());
            }
            attempts += 1;
            if Instant::now() > deadline {
                return Err(Error::Busy {
                    path: self.leaf_dirs[0].clone(),
                    attempts,
                });
            }
            if let Some(f) = freezer {
                let _ = write(&join(&f.dir, "freezer.state"), "FROZEN");
            }
            for pid in self.all_procs() {
                // ESRCH (already gone) is fine.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(f) = freezer {
                let _ = write(&join(&f.dir, "freezer.state"), "THAWED");
            }
            thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(50));
        }
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(p) = read_procs(&join(dir, "cgroup.procs")) {
        out.extend(p);
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

/// rmdir depth-first, retrying EBUSY (a cgroup stays busy briefly after its last task exits).
fn remove_tree(dir: &Path, deadline: Instant) -> Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path(), deadline)?;
            }
        }
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(Error::Fs {
                    op: "removing cgroup",
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn enable_subtree(dir: &Path, wanted: &[&str]) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let available = parse::read(&join(dir, "cgroup.controllers"))?;
    let enabled = parse::read(&join(dir, "cgroup.subtree_control"))?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| available.split_ascii_whitespace().any(|a| a == **w))
        .filter(|w| !enabled.split_ascii_whitespace().any(|a| a == **w))
        .map(|w| format!("+{w}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&join(dir, "cgroup.subtree_control"), &missing.join(" "))
}

/// A new v1 cpuset has empty cpus/mems and refuses tasks until they are set.
fn fill_cpuset_from_parent(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = parse::read(&join(dir, f))?;
        if mine.trim().is_empty() {
            let theirs = parse::read(&join(parent, f))?;
            write(&join(dir, f), theirs.trim())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_disks_are_the_device_backed_block_entries() {
        let root =
            std::env::temp_dir().join(format!("cgsight-test-sysblock-{}", std::process::id()));
        for (name, dev, real) in [
            ("vda", "254:0\n", true),
            ("sdb", "8:16\n", true),
            ("loop0", "7:0\n", false),
            ("zram0", "252:0\n", false),
            ("odd", "garbage\n", true),
        ] {
            let d = root.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("dev"), dev).unwrap();
            if real {
                fs::create_dir_all(d.join("device")).unwrap();
            }
        }
        let got = whole_disks(&root);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(got, ["254:0", "8:16"]);
        assert!(whole_disks(Path::new("/nonexistent-sys-block")).is_empty());
    }
}
