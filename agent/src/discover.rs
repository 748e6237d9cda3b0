//! Which cgroups to export, and what they are: classification of cgroup paths (pure) and the
//! walk of the tree of record (v2: the unified tree; v1/hybrid: the memory hierarchy, or cpu).

use std::path::{Path, PathBuf};

use cgsight_cgroup::{Controller, Hierarchies, Layout};

/// The runtime a cgroup belongs to, as far as its path tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The host's root cgroup `/`.
    Root,
    /// A cgsight container: `/cgsight/<64hex>`.
    Cgsight { id: String },
    /// `/docker/<id>` (cgroupfs driver) or `docker-<id>.scope` (systemd driver), outside kubepods.
    Docker { id: String },
    /// A container of a Kubernetes pod; `runtime` is containerd, crio or docker.
    Kube {
        id: String,
        pod_uid: String,
        runtime: &'static str,
    },
    /// A Kubernetes pod-level cgroup.
    KubePod { pod_uid: String },
    /// `libpod-<id>.scope` (podman).
    Podman { id: String },
    /// A systemd service (`*.service`).
    Service,
    /// Any other cgroup (exported only with `--all-cgroups`).
    Other,
}

impl Kind {
    /// The `runtime` label of `container_info`.
    pub fn runtime(&self) -> &'static str {
        match self {
            Kind::Root | Kind::Other => "",
            Kind::Cgsight { .. } => "cgsight",
            Kind::Docker { .. } => "docker",
            Kind::Kube { runtime, .. } => runtime,
            Kind::KubePod { .. } => "kubernetes",
            Kind::Podman { .. } => "podman",
            Kind::Service => "systemd",
        }
    }

    /// A container cgroup: its sub-cgroups are the container's business, not ours.
    pub fn is_leaf_container(&self) -> bool {
        matches!(
            self,
            Kind::Cgsight { .. } | Kind::Docker { .. } | Kind::Kube { .. } | Kind::Podman { .. }
        )
    }

    /// The runtime's container id, where the path carries one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Kind::Cgsight { id }
            | Kind::Docker { id }
            | Kind::Podman { id }
            | Kind::Kube { id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Kind::Kube { pod_uid, .. } | Kind::KubePod { pod_uid } => Some(pod_uid),
            _ => None,
        }
    }

    /// Exported without `--all-cgroups`.
    pub fn is_default(&self) -> bool {
        !matches!(self, Kind::Other)
    }
}

fn is_hex_id(s: &str, min: usize) -> bool {
    s.len() >= min && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_cgsight_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<prefix><id>.scope` -> id.
fn scope_id<'a>(comp: &'a str, prefix: &str) -> Option<&'a str> {
    let id = comp.strip_prefix(prefix)?.strip_suffix(".scope")?;
    is_hex_id(id, 12).then_some(id)
}

/// The pod uid from a cgroupfs `pod<uid>` or a systemd `kubepods-<qos>-pod<uid_with_underscores>.slice`.
fn pod_uid_of(comp: &str) -> Option<String> {
    if let Some(rest) = comp.strip_prefix("pod") {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Some(rest.to_owned());
        }
    }
    let slice = comp.strip_suffix(".slice")?;
    let i = slice.rfind("-pod")?;
    let uid = &slice[i + 4..];
    (!uid.is_empty() && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_'))
        .then(|| uid.replace('_', "-"))
}

/// Classifies a cgroup path (as `/proc/<pid>/cgroup` names it). Pure.
pub fn classify(path: &str) -> Kind {
    if path == "/" || path.is_empty() {
        return Kind::Root;
    }
    // Components walked as iterators, not collected: this runs for every cgroup each scrape.
    let comps = || path.split('/').filter(|c| !c.is_empty());
    let Some(last) = comps().next_back() else {
        return Kind::Root;
    };
    let (len, first) = (comps().count(), comps().next().unwrap_or_default());
    if len == 2 && first == "cgsight" && is_cgsight_id(last) {
        return Kind::Cgsight {
            id: last.to_owned(),
        };
    }
    let in_kube = comps().any(|c| c.starts_with("kubepods"));
    if in_kube {
        let pod = comps().rev().find_map(pod_uid_of);
        if let Some(pod_uid) = pod {
            // The container is the component right below the pod's.
            let last_is_pod = pod_uid_of(last).is_some();
            if last_is_pod {
                return Kind::KubePod { pod_uid };
            }
            let rt = [
                ("cri-containerd-", "containerd"),
                ("crio-", "crio"),
                ("docker-", "docker"),
            ]
            .iter()
            .find_map(|(p, rt)| scope_id(last, p).map(|id| (id.to_owned(), *rt)));
            if let Some((id, runtime)) = rt {
                return Kind::Kube {
                    id,
                    pod_uid,
                    runtime,
                };
            }
            // cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>; the runtime is not in the path.
            if is_hex_id(last, 12) {
                return Kind::Kube {
                    id: last.to_owned(),
                    pod_uid,
                    runtime: "cri",
                };
            }
        }
        return Kind::Other;
    }
    if len == 2 && first == "docker" && is_hex_id(last, 12) {
        return Kind::Docker {
            id: last.to_owned(),
        };
    }
    if let Some(id) = scope_id(last, "docker-") {
        return Kind::Docker { id: id.to_owned() };
    }
    if let Some(id) = scope_id(last, "libpod-") {
        return Kind::Podman { id: id.to_owned() };
    }
    if last.ends_with(".service") {
        return Kind::Service;
    }
    Kind::Other
}

/// One cgroup to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: String,
    pub kind: Kind,
    /// The directory's inode in the tree of record, where the walk stat'ed it: a cgroup
    /// removed and made again under the same path has a new one.
    pub ino: Option<u64>,
}

/// The hierarchy whose tree we walk: unified on v2, else memory (or cpu) on v1/hybrid.
pub fn tree_of_record(h: &Hierarchies) -> Option<(PathBuf, String)> {
    let m = match h.layout {
        Layout::Unified => h.unified(),
        _ => h
            .mount_for(Controller::Memory)
            .or_else(|| h.mount_for(Controller::Cpu))
            .or_else(|| h.unified()),
    }?;
    Some((m.mount_point.clone(), m.root.clone()))
}

/// Walks the tree of record and returns the cgroups to export, root first. A directory that
/// vanishes during the walk is skipped. Sub-cgroups of containers are not descended into unless
/// `all` is set.
pub fn discover(h: &Hierarchies, all: bool) -> std::io::Result<Vec<Found>> {
    let Some((mount_point, root)) = tree_of_record(h) else {
        return Ok(vec![Found {
            path: "/".into(),
            kind: Kind::Root,
            ino: None,
        }]);
    };
    let mut out = vec![Found {
        path: if root.is_empty() {
            "/".into()
        } else {
            root.clone()
        },
        kind: Kind::Root,
        ino: None,
    }];
    let base = root.trim_end_matches('/').to_owned();
    let mut stack: Vec<(PathBuf, String)> = vec![(mount_point, base)];
    while let Some((dir, path)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if is_gone(&e) => continue,
            Err(e) if out.len() == 1 => return Err(e),
            Err(_) => continue,
        };
        let mut children = Vec::new();
        for ent in rd.flatten() {
            // cgroup dirs are directories; everything else is a control file.
            if !ent.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let (subdirs, ino) = links_and_inode(&ent);
            let mut cpath = String::with_capacity(path.len() + 1 + name.len());
            cpath.push_str(&path);
            cpath.push('/');
            cpath.push_str(name);
            children.push((cpath, subdirs, ino));
        }
        // No order here: the whole list is sorted once at the end. The child's directory
        // and a second copy of its path are made only to descend (most cgroups are leaves).
        for (cpath, subdirs, ino) in children {
            let kind = classify(&cpath);
            let descend = subdirs && (all || !kind.is_leaf_container());
            let next = descend.then(|| {
                let name = cpath.rsplit('/').next().unwrap_or_default();
                (dir.join(name), cpath.clone())
            });
            if all || kind.is_default() {
                out.push(Found {
                    path: cpath,
                    kind,
                    ino,
                });
            }
            if let Some(next) = next {
                stack.push(next);
            }
        }
    }
    // Paths are unique: an unstable sort gives the same order.
    out[1..].sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Whether the directory may have subdirectories, and its inode. False only when it surely
/// has none: kernfs (like most Unix filesystems) counts them in a directory's link count
/// (2 + subdirectories), so one stat spares opening and listing a leaf cgroup's ~30 control
/// files. A count below 2 (btrfs, say) says nothing, nor does a failed stat: then the
/// directory is listed.
fn links_and_inode(ent: &std::fs::DirEntry) -> (bool, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    match ent.metadata() {
        Ok(m) => (m.nlink() != 2, Some(m.ino())),
        Err(_) => (true, None),
    }
}

fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
}

/// The directory of `path` in a mount rooted at `root` (for callers holding raw parts).
pub fn dir_in(mount_point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    if rel.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f9a0c6e1b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

    #[test]
    fn root_and_cgsight() {
        assert_eq!(classify("/"), Kind::Root);
        assert_eq!(
            classify(&format!("/cgsight/{ID}")),
            Kind::Cgsight { id: ID.into() }
        );
        // Not 64 lowercase hex: not a cgsight container.
        assert_eq!(classify("/cgsight/abc"), Kind::Other);
        assert_eq!(
            classify(&format!("/cgsight/{}", ID.to_uppercase())),
            Kind::Other
        );
        assert_eq!(classify("/cgsight"), Kind::Other);
    }

    #[test]
    fn docker_both_drivers() {
        assert_eq!(
            classify(&format!("/docker/{ID}")),
            Kind::Docker { id: ID.into() }
        );
        assert_eq!(
            classify(&format!("/system.slice/docker-{ID}.scope")),
            Kind::Docker { id: ID.into() }
        );
        assert_eq!(classify("/system.slice/docker.service"), Kind::Service);
    }

    #[test]
    fn kubepods_systemd_and_cgroupfs() {
        let sd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12ab34cd_5678_90ef_aaaa_bbbbccccdddd.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            classify(&sd),
            Kind::Kube {
                id: ID.into(),
                pod_uid: "12ab34cd-5678-90ef-aaaa-bbbbccccdddd".into(),
                runtime: "containerd"
            }
        );
        let crio = format!("/kubepods.slice/kubepods-pod1234abcd.slice/crio-{ID}.scope");
        assert!(matches!(
            classify(&crio),
            Kind::Kube {
                runtime: "crio",
                ..
            }
        ));
        let fs = format!("/kubepods/burstable/pod12ab34cd-5678-90ef-aaaa-bbbbccccdddd/{ID}");
        assert_eq!(
            classify(&fs),
            Kind::Kube {
                id: ID.into(),
                pod_uid: "12ab34cd-5678-90ef-aaaa-bbbbccccdddd".into(),
                runtime: "cri"
            }
        );
        assert_eq!(
            classify("/kubepods/burstable/pod12ab34cd-5678-90ef-aaaa-bbbbccccdddd"),
            Kind::KubePod {
                pod_uid: "12ab34cd-5678-90ef-aaaa-bbbbccccdddd".into()
            }
        );
        assert_eq!(classify("/kubepods/burstable"), Kind::Other);
        assert_eq!(classify("/kubepods.slice"), Kind::Other);
    }

    #[test]
    fn podman_and_services() {
        assert_eq!(
            classify(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            Kind::Podman { id: ID.into() }
        );
        assert_eq!(
            classify(&format!("/machine.slice/libpod-{ID}.scope")),
            Kind::Podman { id: ID.into() }
        );
        assert_eq!(classify("/system.slice/cron.service"), Kind::Service);
        assert_eq!(classify("/system.slice"), Kind::Other);
        assert_eq!(
            classify("/user.slice/user-0.slice/session-3.scope"),
            Kind::Other
        );
        assert_eq!(classify("/cgsight-test-x-1-2"), Kind::Other);
    }

    #[test]
    fn leaf_containers_stop_the_walk() {
        assert!(classify(&format!("/docker/{ID}")).is_leaf_container());
        assert!(!classify("/system.slice/cron.service").is_leaf_container());
        assert!(!Kind::Root.is_leaf_container());
    }

    #[test]
    fn dir_in_strips_the_mount_root() {
        assert_eq!(
            dir_in(Path::new("/sys/fs/cgroup"), "/", "/a/b"),
            PathBuf::from("/sys/fs/cgroup/a/b")
        );
        assert_eq!(dir_in(Path::new("/m"), "/ns", "/ns"), PathBuf::from("/m"));
    }
}
