//! Which cgroup hierarchies are mounted where: legacy v1, hybrid (v1 controllers plus a cgroup2
//! mount, like systemd's "hybrid" mode), or unified v2. Read from mountinfo, as lxcfs and runc do.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::parse;

/// The controllers cgsight reads or limits. `Io` is `blkio` on v1 and `io` on v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Cpu,
    Cpuacct,
    Cpuset,
    Memory,
    Io,
    Pids,
    Freezer,
    Devices,
    Hugetlb,
}

impl Controller {
    pub const ALL: [Controller; 9] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Io,
        Controller::Pids,
        Controller::Freezer,
        Controller::Devices,
        Controller::Hugetlb,
    ];

    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Io => "blkio",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
            Controller::Devices => "devices",
            Controller::Hugetlb => "hugetlb",
        }
    }

    /// The name in v2's `cgroup.controllers`. cpuacct has no v2 controller: its data lives in
    /// `cpu.stat`, which every v2 cgroup has. freezer and devices are core features of v2.
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Cpu => Some("cpu"),
            Controller::Cpuset => Some("cpuset"),
            Controller::Memory => Some("memory"),
            Controller::Io => Some("io"),
            Controller::Pids => Some("pids"),
            Controller::Hugetlb => Some("hugetlb"),
            Controller::Cpuacct | Controller::Freezer | Controller::Devices => None,
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v1_name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controller hierarchies plus a cgroup2 mount (which may hold some controllers).
    Hybrid,
    /// Only cgroup2.
    Unified,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Legacy => "legacy (cgroup v1)",
            Layout::Hybrid => "hybrid (cgroup v1 controllers + cgroup2)",
            Layout::Unified => "unified (cgroup v2)",
        })
    }
}

/// One mounted hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub version: Version,
    pub mount_point: PathBuf,
    /// The cgroup this mount exposes as its root (mountinfo field 4): `/` normally, a sub-path
    /// for bind mounts or mounts made inside a cgroup namespace.
    pub root: String,
    /// v1: the mount's options that name controllers (`cpu`, `cpuacct`, `name=systemd`).
    /// v2: the controllers in the mount root's `cgroup.controllers`.
    pub controllers: Vec<String>,
}

impl Mount {
    pub fn has(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == name)
    }

    /// The directory of the cgroup at `path` (as `/proc/<pid>/cgroup` names it) in this mount.
    pub fn dir_of(&self, path: &str) -> PathBuf {
        let rel = if self.root != "/" {
            path.strip_prefix(self.root.as_str()).unwrap_or(path)
        } else {
            path
        };
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        }
    }
}

/// All cgroup hierarchies visible to this process.
#[derive(Clone, Debug, Serialize)]
pub struct Hierarchies {
    pub layout: Layout,
    pub mounts: Vec<Mount>,
}

/// v1 mount options that are not controller names.
const V1_NON_CONTROLLER_OPTS: &[&str] = &[
    "rw",
    "ro",
    "nosuid",
    "nodev",
    "noexec",
    "relatime",
    "noatime",
    "xattr",
    "clone_children",
    "noprefix",
    "cpuset_v2_mode",
];

impl Hierarchies {
    /// Detects the layout of the running system.
    pub fn detect() -> Result<Self> {
        let path = Path::new("/proc/self/mountinfo");
        let text = parse::read(path)?;
        Self::from_mountinfo(&text, |mp| {
            let p = mp.join("cgroup.controllers");
            parse::read(&p)
                .map(|s| s.split_ascii_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        })
    }

    /// Pure part of detection: `v2_controllers` returns the controller list of a cgroup2 mount
    /// (injected so fixtures can be tested without a kernel).
    pub fn from_mountinfo(
        mountinfo: &str,
        v2_controllers: impl Fn(&Path) -> Vec<String>,
    ) -> Result<Self> {
        let mut mounts: Vec<Mount> = Vec::new();
        for e in crate::mountinfo::parse(mountinfo) {
            let version = match e.fstype.as_str() {
                "cgroup" => Version::V1,
                "cgroup2" => Version::V2,
                _ => continue,
            };
            let controllers = match version {
                Version::V1 => e
                    .super_opts
                    .split(',')
                    .filter(|o| !V1_NON_CONTROLLER_OPTS.contains(o))
                    .filter(|o| !o.starts_with("release_agent="))
                    .map(str::to_owned)
                    .collect(),
                Version::V2 => v2_controllers(&e.mount_point),
            };
            mounts.push(Mount {
                version,
                mount_point: e.mount_point,
                root: e.root,
                controllers,
            });
        }
        // The same hierarchy can be mounted more than once (bind mounts, containers); keep the
        // first mount under /sys/fs/cgroup, else the first seen, per hierarchy.
        mounts.sort_by_key(|m| !m.mount_point.starts_with("/sys/fs/cgroup"));
        let mut dedup: Vec<Mount> = Vec::new();
        for m in mounts {
            let same = dedup.iter().any(|d| {
                d.version == m.version
                    && d.controllers == m.controllers
                    && (m.version == Version::V2 || !m.controllers.is_empty())
            });
            if !same {
                dedup.push(m);
            }
        }
        let has_v1 = dedup.iter().any(|m| {
            m.version == Version::V1 && m.controllers.iter().any(|c| !c.starts_with("name="))
        });
        let has_v2 = dedup.iter().any(|m| m.version == Version::V2);
        let layout = match (has_v1, has_v2) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::Legacy,
            (false, true) => Layout::Unified,
            (false, false) => return Err(Error::NoCgroupFs),
        };
        Ok(Hierarchies {
            layout,
            mounts: dedup,
        })
    }

    /// The cgroup2 mount, if any.
    pub fn unified(&self) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.version == Version::V2)
    }

    /// The mount that serves `c`: a v1 hierarchy naming it wins (as on hybrid hosts); otherwise
    /// the cgroup2 mount if it holds the controller. On a unified host `cpuacct` data comes from
    /// `cpu.stat`, which needs no controller.
    pub fn mount_for(&self, c: Controller) -> Option<&Mount> {
        if let Some(m) = self
            .mounts
            .iter()
            .find(|m| m.version == Version::V1 && m.has(c.v1_name()))
        {
            return Some(m);
        }
        let u = self.unified()?;
        match c.v2_name() {
            Some(name) if u.has(name) => Some(u),
            // A cgroup2 mount with no v1 controllers next to it has core features for these.
            None if self.layout == Layout::Unified => Some(u),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's mountinfo, as the kernel wrote it.
    pub(crate) const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd legacy host: co-mounted cpu,cpuacct and net_cls,net_prio, no cgroup2.
    const LEGACY: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset,clone_children
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
34 25 0:31 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,blkio
";

    const UNIFIED: &str = "\
24 18 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// Inside a container with a cgroup namespace, the host's view is bind-mounted read-only and
    /// the root field names the container's cgroup.
    const IN_CGROUPNS: &str = "\
900 800 0:21 /kubepods/pod1/abc /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
";

    fn v2(_: &Path) -> Vec<String> {
        ["cpuset", "cpu", "io", "memory", "pids"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn hybrid_layout_prefers_v1_controllers() {
        let h = Hierarchies::from_mountinfo(HYBRID, |_| vec!["hugetlb".into()]).unwrap();
        assert_eq!(h.layout, Layout::Hybrid);
        assert_eq!(
            h.mount_for(Controller::Memory).unwrap().mount_point,
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            h.mount_for(Controller::Hugetlb).unwrap().mount_point,
            Path::new("/sys/fs/cgroup/unified")
        );
        assert_eq!(h.mount_for(Controller::Io).unwrap().version, Version::V1);
        assert!(h.mounts.iter().any(|m| m.has("name=systemd")));
    }

    #[test]
    fn legacy_layout_with_comounts() {
        let h = Hierarchies::from_mountinfo(LEGACY, |_| vec![]).unwrap();
        assert_eq!(h.layout, Layout::Legacy);
        let cpu = h.mount_for(Controller::Cpu).unwrap();
        let acct = h.mount_for(Controller::Cpuacct).unwrap();
        assert_eq!(cpu.mount_point, acct.mount_point);
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(h.mount_for(Controller::Hugetlb).is_none());
        assert!(h.unified().is_none());
        // release_agent= and xattr are options, not controllers.
        let sd = h.mounts.iter().find(|m| m.has("name=systemd")).unwrap();
        assert_eq!(sd.controllers, vec!["name=systemd".to_string()]);
    }

    #[test]
    fn unified_layout() {
        let h = Hierarchies::from_mountinfo(UNIFIED, v2).unwrap();
        assert_eq!(h.layout, Layout::Unified);
        for c in [
            Controller::Memory,
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Io,
        ] {
            assert_eq!(h.mount_for(c).unwrap().version, Version::V2, "{c}");
        }
    }

    #[test]
    fn unified_with_partial_controllers() {
        let h =
            Hierarchies::from_mountinfo(UNIFIED, |_| vec!["memory".into(), "pids".into()]).unwrap();
        assert!(h.mount_for(Controller::Memory).is_some());
        assert!(h.mount_for(Controller::Cpuset).is_none());
        assert!(h.mount_for(Controller::Cpuacct).is_some());
    }

    #[test]
    fn cgroup_namespace_root_is_stripped() {
        let h = Hierarchies::from_mountinfo(IN_CGROUPNS, v2).unwrap();
        let m = h.unified().unwrap();
        assert_eq!(m.root, "/kubepods/pod1/abc");
        assert_eq!(m.dir_of("/kubepods/pod1/abc"), Path::new("/sys/fs/cgroup"));
        assert_eq!(
            m.dir_of("/kubepods/pod1/abc/sub"),
            Path::new("/sys/fs/cgroup/sub")
        );
        // Inside the namespace /proc/self/cgroup says "/", which is the mount root.
        assert_eq!(m.dir_of("/"), Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn no_cgroupfs_is_an_error() {
        let e = Hierarchies::from_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda rw\n", v2).unwrap_err();
        assert!(matches!(e, Error::NoCgroupFs));
    }
}
