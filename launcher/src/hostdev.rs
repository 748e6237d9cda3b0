//! `--privileged`: the host's device nodes recreated in the container's own /dev tmpfs (as
//! docker does), so the container sees the host's disks, ttys and the rest by their usual
//! names while /dev/pts, /dev/shm and /dev/mqueue stay its own.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag};

use crate::sys::ChildResult;

/// Directories under /dev that are per-container mounts or hold no device nodes of their own.
const SKIP: [&str; 5] = ["pts", "shm", "mqueue", "fd", ".udev"];

/// Copies every character and block node under `host` (the host's /dev) into `dev`, keeping
/// mode and owner; nodes already there (the defaults) are left as they are.
pub fn copy_nodes(host: &Path, dev: &Path) -> ChildResult<()> {
    copy_dir(host, dev, 0)
}

fn copy_dir(host: &Path, dev: &Path, depth: usize) -> ChildResult<()> {
    // /dev is shallow (/dev/disk/by-*/ holds symlinks only); the bound stops a loop.
    if depth > 4 {
        return Ok(());
    }
    let entries = fs::read_dir(host).map_err(|e| format!("reading {}: {e}", host.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        if depth == 0 && SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let Ok(md) = e.metadata() else { continue };
        let ft = md.file_type();
        let dst = dev.join(&name);
        if ft.is_dir() {
            if fs::create_dir_all(&dst).is_ok() {
                let _ = fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777));
                copy_dir(&e.path(), &dst, depth + 1)?;
            }
            continue;
        }
        let kind = if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else {
            continue;
        };
        if fs::symlink_metadata(&dst).is_ok() {
            continue;
        }
        let rdev = md.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let mode = Mode::from_bits_truncate(md.mode() & 0o7777);
        crate::mounts::make_node(&dst, kind, mode, major, minor)?;
        let _ = std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()));
    }
    Ok(())
}
