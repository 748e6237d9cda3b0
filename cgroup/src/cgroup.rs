//! A cgroup as one object across hierarchies: for each controller, the directory that holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cpu::{self, CpuLimits, CpuUsage, Throttling};
use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::io::{self, IoDevice};
use crate::layout::{Controller, Hierarchies, Version};
use crate::memory::{self, Memory};
use crate::oom::{self, OomEvents};
use crate::parse::{self, join};
use crate::pids::{self, Pids};
use crate::pressure::{self, Pressure};
use crate::process::Membership;

/// Where one controller of a cgroup lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControllerDir {
    pub version: Version,
    pub dir: PathBuf,
    /// The hierarchy's mount point: ancestor walks stop here.
    pub mount_point: PathBuf,
}

impl ControllerDir {
    /// This directory and its ancestors up to the mount point, innermost first.
    pub fn ancestry(&self) -> impl Iterator<Item = &Path> {
        let mp = self.mount_point.as_path();
        self.dir.ancestors().take_while(move |p| p.starts_with(mp))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cpuset {
    pub cpus: CpuList,
    pub mems: CpuList,
}

/// A cgroup resolved on this host's hierarchies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cgroup {
    /// The cgroup's path (v2 path, or the memory/cpu path on v1), for display and labels.
    pub path: String,
    pub dirs: BTreeMap<Controller, ControllerDir>,
    /// The cgroup2 directory on hybrid and unified hosts (PSI, cgroup.kill, cgroup.events).
    pub unified: Option<PathBuf>,
}

impl Cgroup {
    /// The cgroup of `pid` (a process or thread id).
    pub fn of_pid(h: &Hierarchies, pid: i32) -> Result<Self> {
        Ok(Self::from_membership(h, &Membership::of_pid(pid)?))
    }

    pub fn from_membership(h: &Hierarchies, m: &Membership) -> Self {
        let mut dirs = BTreeMap::new();
        for c in Controller::ALL {
            let (Some(mount), Some(path)) = (h.mount_for(c), m.path_for(h, c)) else {
                continue;
            };
            dirs.insert(
                c,
                ControllerDir {
                    version: mount.version,
                    dir: mount.dir_of(path),
                    mount_point: mount.mount_point.clone(),
                },
            );
        }
        let unified = match (h.unified(), m.v2_path()) {
            (Some(u), Some(p)) => Some(u.dir_of(p)),
            _ => None,
        };
        let path = m
            .path_for(h, Controller::Memory)
            .or_else(|| m.path_for(h, Controller::Cpu))
            .or_else(|| m.v2_path())
            .unwrap_or("/")
            .to_owned();
        Cgroup {
            path,
            dirs,
            unified,
        }
    }

    /// The cgroup at the same `path` in every hierarchy (how cgsight lays out its own cgroups).
    pub fn at_path(h: &Hierarchies, path: &str) -> Self {
        let mut dirs = BTreeMap::new();
        for c in Controller::ALL {
            if let Some(mount) = h.mount_for(c) {
                dirs.insert(
                    c,
                    ControllerDir {
                        version: mount.version,
                        dir: mount.dir_of(path),
                        mount_point: mount.mount_point.clone(),
                    },
                );
            }
        }
        Cgroup {
            path: path.to_owned(),
            dirs,
            unified: h.unified().map(|u| u.dir_of(path)),
        }
    }

    pub fn dir(&self, c: Controller) -> Option<&ControllerDir> {
        self.dirs.get(&c)
    }

    fn need(&self, c: Controller) -> Result<&ControllerDir> {
        self.dir(c).ok_or(Error::NoController(c))
    }

    /// True if the cgroup still exists (its memory or cpu directory, or the v2 directory).
    pub fn exists(&self) -> bool {
        self.dirs.values().any(|d| d.dir.is_dir())
    }

    pub fn memory(&self) -> Result<Memory> {
        let d = self.need(Controller::Memory)?;
        memory::read(&d.dir, d.version)
    }

    pub fn cpu_limits(&self) -> Result<CpuLimits> {
        let d = self.need(Controller::Cpu)?;
        cpu::read_limits(&d.dir, d.version)
    }

    pub fn cpu_usage(&self) -> Result<CpuUsage> {
        let d = self.need(Controller::Cpuacct)?;
        cpu::read_usage(&d.dir, d.version)
    }

    pub fn cpu_throttling(&self) -> Result<Throttling> {
        let d = self.need(Controller::Cpu)?;
        cpu::read_throttling(&d.dir, d.version)
    }

    pub fn cpuset(&self) -> Result<Cpuset> {
        let d = self.need(Controller::Cpuset)?;
        read_cpuset(d)
    }

    pub fn io(&self) -> Result<Vec<IoDevice>> {
        let d = self.need(Controller::Io)?;
        io::read(&d.dir, d.version)
    }

    pub fn pids(&self) -> Result<Pids> {
        let d = self.need(Controller::Pids)?;
        pids::read(&d.dir, d.version)
    }

    pub fn oom(&self) -> Result<OomEvents> {
        let d = self.need(Controller::Memory)?;
        oom::read(&d.dir, d.version)
    }

    /// PSI from the cgroup2 directory; all None when there is none.
    pub fn pressure(&self) -> Result<Pressure> {
        match &self.unified {
            Some(u) => pressure::read(u),
            None => Ok(Pressure::default()),
        }
    }

    /// Processes (thread-group ids) directly in this cgroup (v2 dir, else the memory/cpu dir).
    pub fn procs(&self) -> Result<Vec<i32>> {
        let dir = self
            .unified
            .as_ref()
            .filter(|u| u.join("cgroup.procs").exists())
            .or_else(|| self.dirs.values().next().map(|d| &d.dir))
            .ok_or(Error::NoController(Controller::Memory))?;
        read_procs(&join(dir, "cgroup.procs"))
    }

    /// The tightest memory limit on this cgroup and its ancestors. Limits below it are ignored.
    pub fn effective_memory_limit(&self) -> Result<Option<u64>> {
        let d = self.need(Controller::Memory)?;
        min_over(d, |p| memory::read_limit(p, d.version))
    }

    /// The tightest CPU quota (in CPUs) on this cgroup and its ancestors.
    pub fn effective_cpu_quota(&self) -> Result<Option<f64>> {
        let d = self.need(Controller::Cpu)?;
        let mut best: Option<f64> = None;
        for p in d.ancestry() {
            let l = cpu::read_limits(p, d.version)?;
            if let Some(c) = l.cpus() {
                best = Some(best.map_or(c, |b| b.min(c)));
            }
        }
        Ok(best)
    }

    /// The tightest pids.max on this cgroup and its ancestors.
    pub fn effective_pids_max(&self) -> Result<Option<u64>> {
        let d = self.need(Controller::Pids)?;
        min_over(d, |p| Ok(pids::read(p, d.version)?.max))
    }

    /// The tightest swap-only limit on this cgroup and its ancestors.
    pub fn effective_swap_limit(&self) -> Result<Option<u64>> {
        let d = self.need(Controller::Memory)?;
        min_over(d, |p| {
            let limit = memory::read_limit(p, d.version)?;
            Ok(memory::read_swap_limits(p, d.version, limit)?.and_then(|(swap, _)| swap))
        })
    }
}

/// Minimum of `f` over a directory and its ancestors; a missing file at the hierarchy root is
/// "unlimited" (roots have no limit files), elsewhere it is an error.
fn min_over(d: &ControllerDir, f: impl Fn(&Path) -> Result<Option<u64>>) -> Result<Option<u64>> {
    let mut best: Option<u64> = None;
    for p in d.ancestry() {
        let v = match f(p) {
            Ok(v) => v,
            Err(e) if p == d.mount_point && e.is_gone() => None,
            Err(e) => return Err(e),
        };
        if let Some(v) = v {
            best = Some(best.map_or(v, |b| b.min(v)));
        }
    }
    Ok(best)
}

/// Effective CPUs and memory nodes. An empty `cpuset.cpus` in v1 means "not set yet": use the
/// effective file, then the nearest ancestor that has CPUs (as lxcfs does).
pub fn read_cpuset(d: &ControllerDir) -> Result<Cpuset> {
    let (cpus_files, mems_files): (&[&str], &[&str]) = match d.version {
        Version::V1 => (
            &["cpuset.effective_cpus", "cpuset.cpus"],
            &["cpuset.effective_mems", "cpuset.mems"],
        ),
        Version::V2 => (&["cpuset.cpus.effective"], &["cpuset.mems.effective"]),
    };
    let first_non_empty = |files: &[&str]| -> Result<CpuList> {
        for p in d.ancestry() {
            for f in files {
                let path = join(p, f);
                if let Some(t) = parse::read_opt(&path)? {
                    let l = CpuList::parse_at(&path, &t)?;
                    if !l.is_empty() {
                        return Ok(l);
                    }
                }
            }
        }
        Ok(CpuList::default())
    };
    Ok(Cpuset {
        cpus: first_non_empty(cpus_files)?,
        mems: first_non_empty(mems_files)?,
    })
}

pub(crate) fn read_procs(path: &Path) -> Result<Vec<i32>> {
    let text = parse::read(path)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim()
                .parse()
                .map_err(|_| parse::parse_err(path, "a pid", l))
        })
        .collect()
}
