//! Temporary directories and mount points, cleaned up on drop.

use std::fs;
use std::path::{Path, PathBuf};

use crate::unique_name;

/// A mount point detached (MNT_DETACH) on drop.
pub struct MountGuard {
    pub target: PathBuf,
}

impl MountGuard {
    pub fn new(target: impl Into<PathBuf>) -> Self {
        MountGuard {
            target: target.into(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A temporary directory (under /tmp unless asked, named cgsight-test-*) removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }
    /// Under `base` instead of /tmp (e.g. /var/tmp, for a directory on a real disk).
    pub fn new_in(base: &Path, tag: &str) -> Self {
        let path = base.join(unique_name(tag));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Whether something is mounted at `path` in this process's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    cgsight_cgroup::mountinfo::read_self()
        .map(|m| cgsight_cgroup::mountinfo::is_mount_point(&m, path))
        .unwrap_or(false)
}
