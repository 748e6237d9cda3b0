//! A read that cannot hang its caller: done in a forked child, which is killed when it takes
//! too long. A FUSE request to a stopped or hung server blocks its reader until the server
//! answers, and only a fatal signal ends that wait: so the reader must be a process we can
//! kill, not a thread.

use std::ffi::CString;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// How a bounded read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The first bytes (or EOF) came back.
    Read,
    /// open or read failed with this errno.
    Failed(i32),
    /// No answer in time: the reader was killed.
    TimedOut,
}

/// Opens `path` and reads from it in a child process, waiting at most `timeout`.
pub fn read_bounded(path: &Path, timeout: Duration) -> Probe {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return Probe::Failed(libc::EINVAL);
    };
    // SAFETY: after fork the child runs only async-signal-safe calls (open, read, _exit) on
    // memory prepared before the fork: no allocation, no locks, no return into Rust code.
    match unsafe { fork() } {
        Err(e) => Probe::Failed(e as i32),
        Ok(ForkResult::Child) => {
            let mut buf = [0u8; 64];
            // SAFETY: cpath is a live NUL-terminated string and buf a live buffer of its length.
            let code = unsafe {
                let fd = libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) < 0 {
                    nix::errno::Errno::last_raw().clamp(1, 255)
                } else {
                    0
                }
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => wait_bounded(child, timeout),
    }
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reaps `child` if it ends within `timeout`, else kills and reaps it.
fn wait_bounded(child: Pid, timeout: Duration) -> Probe {
    let end = Instant::now() + timeout;
    // A pidfd polls readable when the child exits (Linux 5.3+); without one, poll briefly.
    let pidfd = pidfd_open(child);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => return Probe::Read,
            Ok(WaitStatus::Exited(_, code)) => return Probe::Failed(code),
            Ok(WaitStatus::Signaled(..)) => return Probe::Failed(libc::EINTR),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Probe::Failed(e as i32),
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ms = PollTimeout::from(left.as_millis().clamp(1, 100) as u16);
        match &pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, ms);
            }
            None => std::thread::sleep(Duration::from_millis(10).min(left)),
        }
    }
    // The child's FUSE wait ends on SIGKILL (the kernel aborts a request on a fatal signal).
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    Probe::TimedOut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fails_and_times_out() {
        assert_eq!(
            read_bounded(Path::new("/proc/uptime"), Duration::from_secs(5)),
            Probe::Read
        );
        assert_eq!(
            read_bounded(
                Path::new("/nonexistent/cgsight-test-probe"),
                Duration::from_secs(5)
            ),
            Probe::Failed(libc::ENOENT)
        );
        // A FIFO with no writer blocks open() forever: the child must be killed.
        let fifo = std::env::temp_dir().join(format!("cgsight-test-probe-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let r = read_bounded(&fifo, Duration::from_millis(200));
        let _ = std::fs::remove_file(&fifo);
        assert_eq!(r, Probe::TimedOut);
    }
}
