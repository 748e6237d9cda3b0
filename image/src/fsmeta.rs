//! File metadata the std library does not reach: ownership and times without following
//! symlinks, device nodes, and extended attributes.

use crate::error::{io, Result};
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, FchownatFlags, Gid, Uid};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| crate::error::format("path", format_args!("{} holds a NUL", p.display())))
}

fn nix_io(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

pub fn lchown(p: &Path, uid: u64, gid: u64) -> Result<()> {
    let (uid, gid) = (u32::try_from(uid).ok(), u32::try_from(gid).ok());
    fchownat(
        nix::fcntl::AT_FDCWD,
        p,
        uid.map(Uid::from_raw),
        gid.map(Gid::from_raw),
        FchownatFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(nix_io)
    .map_err(io(format!("chown {}", p.display())))
}

/// Sets atime and mtime to `mtime` (seconds) without following a symlink.
pub fn set_mtime(p: &Path, mtime: i64) -> Result<()> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_io)
    .map_err(io(format!("setting times of {}", p.display())))
}

pub fn make_node(p: &Path, kind: SFlag, perm: u32, major: u64, minor: u64) -> Result<()> {
    let dev = nix::sys::stat::makedev(major, minor);
    mknod(p, kind, Mode::from_bits_truncate(perm), dev)
        .map_err(nix_io)
        .map_err(io(format!("mknod {}", p.display())))
}

/// An overlay whiteout: a 0/0 character device.
pub fn make_whiteout(p: &Path) -> Result<()> {
    make_node(p, SFlag::S_IFCHR, 0, 0, 0)
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    let (cp, cn) = (
        cpath(p)?,
        CString::new(name).map_err(|_| crate::error::format("xattr name", name))?,
    );
    // SAFETY: both strings are NUL-terminated and the value slice outlives the call.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io(format!("setting xattr {name} on {}", p.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub fn get_xattr(p: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let (cp, cn) = (
        cpath(p)?,
        CString::new(name).map_err(|_| crate::error::format("xattr name", name))?,
    );
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: buf is writable for its full length.
    let r =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(io(format!("reading xattr {name} of {}", p.display()))(e)),
        };
    }
    buf.truncate(usize::try_from(r).unwrap_or(0));
    Ok(Some(buf))
}

/// Names of the extended attributes of `p` (not following a symlink).
pub fn list_xattrs(p: &Path) -> Result<Vec<String>> {
    let cp = cpath(p)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: buf is writable for its full length.
    let r = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(io(format!("listing xattrs of {}", p.display()))(e)),
        };
    }
    buf.truncate(usize::try_from(r).unwrap_or(0));
    Ok(buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// True for overlay's internal attributes, which must neither come from nor go into a layer tar.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}
