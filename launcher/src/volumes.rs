//! Volumes (`-v HOST:TARGET`). The target is resolved inside the container's root with
//! openat2(RESOLVE_IN_ROOT), so a symlink in the root is followed within the root and never
//! out to the host (a rootfs's `/etc/localtime -> /usr/share/zoneinfo/...` lands on the
//! root's zoneinfo file; a hostile link cannot make us create or cover a host file). The bind
//! is made on the resolved descriptor.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use crate::spec::{under_proc_or_sys, Volume};
use crate::sys::{do_mount, ChildResult};

fn in_root(root: &OwnedFd, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, rel, how)
}

fn lookup(root: &OwnedFd, rel: &Path) -> nix::Result<OwnedFd> {
    in_root(root, rel, OFlag::O_PATH, Mode::empty())
}

/// Opens `rel` inside the root, creating what is missing (directories on the way; the last
/// component a directory or an empty file, like the host side).
fn resolve_or_create(root: &OwnedFd, rel: &Path, dir: bool) -> ChildResult<OwnedFd> {
    let shown = Path::new("/").join(rel);
    let fail = |what: &str, e: Errno| format!("volume target {}: {what}: {e}", shown.display());
    match lookup(root, rel) {
        Err(Errno::ENOENT) => {}
        r => return r.map_err(|e| fail("resolving it in the container's root", e)),
    }
    let comps: Vec<Component<'_>> = rel.components().collect();
    let mut prefix = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        let parent = prefix.clone();
        prefix.push(c);
        match lookup(root, &prefix) {
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(fail("resolving it in the container's root", e)),
        }
        if i + 1 == comps.len() && !dir {
            // O_CREAT follows a dangling symlink, and RESOLVE_IN_ROOT keeps that inside.
            in_root(
                root,
                &prefix,
                OFlag::O_CREAT | OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o644),
            )
            .map_err(|e| fail("creating it", e))?;
        } else {
            let pfd = lookup(root, &parent).map_err(|e| fail("resolving its parent", e))?;
            nix::sys::stat::mkdirat(&pfd, c.as_os_str(), Mode::from_bits_truncate(0o755))
                .map_err(|e| fail("creating a directory on its path", e))?;
        }
    }
    lookup(root, rel).map_err(|e| fail("resolving it in the container's root", e))
}

/// Binds `v` into the container's root `root` (before pivot_root).
pub fn mount_volume(root: &Path, v: &Volume) -> ChildResult<()> {
    let rootfd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening {}: {e}", root.display()))?;
    let rel: PathBuf = v
        .container
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let target = resolve_or_create(&rootfd, &rel, v.host.is_dir())?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", target.as_raw_fd()));
    let real =
        std::fs::read_link(&fd_path).map_err(|e| format!("reading {}: {e}", fd_path.display()))?;
    let inside = real
        .strip_prefix(root)
        .map(|p| Path::new("/").join(p))
        .map_err(|_| {
            format!(
                "volume target {} resolves outside the container's root",
                v.container.display()
            )
        })?;
    if inside == Path::new("/") || under_proc_or_sys(&inside) {
        return Err(format!(
            "volume target {} resolves to {}: cannot mount on /, /proc or /sys",
            v.container.display(),
            inside.display()
        ));
    }
    // A bind is not read-only until remounted; the remount goes by the resolved path, which
    // holds no symlinks, while the bind itself goes through the descriptor.
    do_mount(
        Some(&v.host),
        &fd_path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if v.readonly {
        do_mount(
            None,
            &real,
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}
