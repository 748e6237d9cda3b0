//! Thin syscall helpers shared by the supervisor, the container's child and `exec`. Helpers
//! used in a forked child return [`ChildResult`]: their errors travel back to the parent as
//! one line of text.

use std::ffi::CString;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::LaunchError;

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

/// C strings for exec: argv or `KEY=VALUE` environment entries.
pub fn cstrings<S: AsRef<str>>(
    items: impl IntoIterator<Item = S>,
) -> Result<Vec<CString>, LaunchError> {
    items
        .into_iter()
        .map(|s| CString::new(s.as_ref()).map_err(|_| LaunchError::Nul(s.as_ref().to_owned())))
        .collect()
}

/// Writes all of `buf`, retrying on EINTR; other errors drop the rest (the reader then sees
/// a short message or EOF, which it reports).
pub fn write_all_fd(fd: impl AsFd, mut buf: &[u8]) {
    let fd = fd.as_fd();
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return,
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// One read, retried on EINTR (0 bytes on EOF or error).
pub fn read_once(fd: impl AsFd, buf: &mut [u8]) -> usize {
    loop {
        match nix::unistd::read(fd.as_fd(), buf) {
            Err(Errno::EINTR) => {}
            r => return r.unwrap_or(0),
        }
    }
}

/// Reads until EOF (or error).
pub fn read_to_end_fd(fd: impl AsFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = read_once(fd.as_fd(), &mut buf);
        match buf.get(..n) {
            Some(b) if n > 0 => out.extend_from_slice(b),
            _ => return out,
        }
    }
}

/// A pipe with both ends close-on-exec: (read, write).
pub fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LaunchError::sys("pipe"))
}

/// Every signal blocked and delivered through [`BlockedSignals::fd`] instead; the previous
/// mask comes back on drop. The supervisor, `exec` and `--init` all wait this way.
pub struct BlockedSignals {
    pub fd: SignalFd,
    old: SigSet,
}

pub fn block_all_signals() -> nix::Result<BlockedSignals> {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old))?;
    let fd = SignalFd::with_flags(&all, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    Ok(BlockedSignals { fd, old })
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// close_range(2)'s flag (linux/close_range.h; not in the libc crate).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Only stdio and `preserve` (see [`preserved_fds`]) reach what we exec: everything else is
/// marked close-on-exec (our own pipes still work until exec), the preserved ones are
/// cleared of it. A descriptor the caller leaked (`exec 8</`) would otherwise let the
/// container reach the host's filesystem through /proc/self/fd/8.
pub fn close_inherited_fds(preserve: &[i32]) -> ChildResult<()> {
    // SAFETY: close_range only changes descriptor flags.
    if unsafe { libc::close_range(3, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC as i32) } != 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    for &fd in preserve {
        // SAFETY: F_SETFD on a descriptor that was open when we started.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let _ = nix::fcntl::fcntl(
            b,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
    }
    Ok(())
}

/// Closes every descriptor from 3 up except `keep` (the `--init` pid 1, which never execs,
/// must not hold what the caller leaked either).
pub fn close_fds_except(keep: std::os::fd::RawFd) {
    let keep = keep.max(0) as libc::c_uint;
    // SAFETY: closing descriptor ranges that nothing in this process uses any more.
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep.max(2) + 1, libc::c_uint::MAX, 0);
    }
}

/// `--preserve-fds N`: those of descriptors 3..3+N that are open now, when nothing of ours
/// is. A number that is not open would later be taken by one of our own pipes; passing that
/// on would leak it (and hang the supervisor waiting for the pipe's end of file).
pub fn preserved_fds(n: u32) -> Vec<i32> {
    (3..3u32.saturating_add(n))
        .map(|fd| fd as i32)
        .filter(|&fd| {
            // SAFETY: F_GETFD only asks whether the number is an open descriptor.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_GETFD).is_ok()
        })
        .collect()
}

/// A descriptor the child sends (SCM_RIGHTS, received close-on-exec): the pty master, the
/// seccomp listener. None if the child closed its end first.
pub fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    let mut cmsgs = msg.cmsgs().ok()?;
    cmsgs
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        // SAFETY: SCM_RIGHTS installed this descriptor in our table; we are its only owner.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}
