//! Thin syscall helpers whose errors name what failed (used in the container's child, where
//! errors travel back to the supervisor as one line of text).

use std::ffi::CString;
use std::path::Path;

use nix::mount::{mount, MsFlags};

pub type ChildResult<T> = Result<T, String>;

pub fn do_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> ChildResult<()> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {} ({}): {e}",
            src.map_or_else(
                || fstype.unwrap_or("none").to_owned(),
                |s| s.display().to_string()
            ),
            target.display(),
            fstype.unwrap_or("bind/remount")
        )
    })
}

pub fn cstring(s: &str) -> ChildResult<CString> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

pub fn write_all_fd(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: writing from a valid slice to an fd we own.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// Reads until EOF (or error).
pub fn read_to_end_fd(fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return out;
        }
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// A pipe with both ends close-on-exec.
pub fn pipe_cloexec() -> std::io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

pub fn close(fd: i32) {
    if fd >= 0 {
        // SAFETY: closing an fd we own.
        unsafe { libc::close(fd) };
    }
}
