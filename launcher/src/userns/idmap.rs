//! Presenting files to container root: idmapped clones of a directory (a `--rootfs` whose
//! root-owned files must belong to container root) and the ownership of the writable layer.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{IdRange, UsernsError};

// Kernel ABI (include/uapi/linux/mount.h); spelled out so older libc crates build too.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// struct mount_attr, version 0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString, UsernsError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| UsernsError::Sys {
        what: format!("{} contains a NUL byte", p.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// A detached clone of the mount at `src` (with its submounts if `recursive`), idmapped through
/// `userns`: a file owned by host uid `n` on disk shows as the id that container uid `n` maps
/// to, so the rootfs's root-owned files belong to container root. Attach it with
/// [`attach_tree`]. Fails with [`UsernsError::IdmapUnsupported`] where the kernel (< 5.12) or
/// the filesystem (e.g. tmpfs before 6.3) cannot idmap; there is no chown-copy fallback.
pub fn idmapped_tree(
    src: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> Result<OwnedFd, UsernsError> {
    let c = cpath(src)?;
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec;
    // SAFETY: open_tree with a valid C string; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(UsernsError::sys(format!("open_tree {}", src.display())));
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr on our tree fd with a valid struct of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | rec,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(UsernsError::IdmapUnsupported {
            path: src.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(tree)
}

/// Mounts a detached tree (from [`idmapped_tree`]) on `target` in the caller's mount namespace.
pub fn attach_tree(tree: OwnedFd, target: &Path) -> Result<(), UsernsError> {
    let c = cpath(target)?;
    let empty = c"";
    // SAFETY: move_mount from our tree fd to a valid C path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(UsernsError::sys(format!(
            "move_mount to {}",
            target.display()
        )));
    }
    Ok(())
}

/// Gives the overlay's upper and work dirs (the dirs themselves, not their contents) to
/// container root, so the merged root is container root's and it can create files there.
pub fn chown_writable(dirs: &[&Path], range: &IdRange) -> Result<(), UsernsError> {
    for d in dirs {
        std::os::unix::fs::lchown(d, Some(range.uid), Some(range.gid))
            .map_err(|e| UsernsError::io(*d, e))?;
    }
    Ok(())
}
