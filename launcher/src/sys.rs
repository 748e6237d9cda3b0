//! Thin syscall helpers shared by the supervisor, the container's child and `exec`. Helpers
//! used in a forked child return [`ChildResult`]: their errors travel back to the parent as
//! one line of text.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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
