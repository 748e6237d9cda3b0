//! A read that cannot hang its caller: done in a forked process, which is killed when it
//! takes too long. A FUSE request to a stopped or hung server blocks its reader until the
//! server answers; only a fatal signal ends that wait, and not even that once the server has
//! taken the request (always so over io_uring: the request sits in the stopped server's
//! ring). So the reader is a grandchild, orphaned at once: a reader that outlives its kill
//! stays stuck in the kernel until the server answers or dies, then is reaped by init, and
//! the caller keeps neither a thread nor a zombie.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult, Pid};

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

/// Messages from the reader, 8 bytes each (atomic on a pipe): a tag and a value.
const TAG_PID: u32 = 1;
const TAG_RESULT: u32 = 2;

/// Writes one message; only async-signal-safe calls.
fn send(fd: i32, tag: u32, value: i32) {
    let mut m = [0u8; 8];
    let (t, v) = m.split_at_mut(4);
    t.copy_from_slice(&tag.to_ne_bytes());
    v.copy_from_slice(&value.to_ne_bytes());
    // SAFETY: writes 8 bytes from a live stack buffer.
    unsafe { libc::write(fd, m.as_ptr().cast(), m.len()) };
}

/// The reader: its pid, then 0 or the errno of open/read. Never returns.
fn reader(path: &CString, out: i32) -> ! {
    // SAFETY: getpid, open, read, write and _exit are async-signal-safe; path and the buffer
    // were made before the fork.
    unsafe {
        // Nothing of the caller's but the result pipe: a reader stuck in an unkillable wait
        // (io_uring) would otherwise hold, say, the caller's stdout, and whoever reads that
        // to EOF (a script around `cgsight ps`) would hang with it. close_range is a plain
        // syscall; ENOSYS (Linux < 5.9) leaves them open, no worse than before.
        if out > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (out - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (out + 1) as u32, u32::MAX, 0u32);
        send(out, TAG_PID, libc::getpid());
        let mut buf = [0u8; 64];
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        let r = if fd < 0 || libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) < 0 {
            nix::errno::Errno::last_raw().max(1)
        } else {
            0
        };
        send(out, TAG_RESULT, r);
        libc::_exit(0)
    }
}

/// Opens `path` and reads from it in another process, waiting at most `timeout`.
pub fn read_bounded(path: &Path, timeout: Duration) -> Probe {
    match start_read(path) {
        Ok(r) => r.finish(timeout),
        Err(p) => p,
    }
}

/// A bounded read under way: its reader runs while the caller does other work (a launch
/// sets up the container meanwhile), and [`Reading::finish`] collects the result.
pub struct Reading {
    rx: OwnedFd,
    started: Instant,
}

impl Reading {
    /// The read's result, waiting until `timeout` after the read started.
    pub fn finish(self, timeout: Duration) -> Probe {
        collect(self.rx, self.started + timeout)
    }
}

/// Starts reading `path` in another process; Err is a result known at once.
pub fn start_read(path: &Path) -> Result<Reading, Probe> {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return Err(Probe::Failed(libc::EINVAL));
    };
    let (rx, tx) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Probe::Failed(e as i32))?;
    let started = Instant::now();
    // SAFETY: after fork the children run only async-signal-safe calls (fork, getpid, open,
    // read, write, _exit) on memory prepared before the fork, and never return into Rust.
    match unsafe { fork() } {
        Err(e) => Err(Probe::Failed(e as i32)),
        Ok(ForkResult::Child) => {
            // SAFETY: as above; the intermediate child only forks and exits, orphaning the
            // reader so that init, not our caller, reaps it.
            unsafe {
                match libc::fork() {
                    0 => reader(&cpath, tx.as_raw_fd()),
                    -1 => send(tx.as_raw_fd(), TAG_RESULT, nix::errno::Errno::last_raw()),
                    _ => {}
                }
                libc::_exit(0)
            }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = waitpid(child, None);
            drop(tx);
            Ok(Reading { rx, started })
        }
    }
}

/// Reads the reader's messages until its result, its end (EOF) or `end`; kills it on timeout.
fn collect(rx: OwnedFd, end: Instant) -> Probe {
    let mut pid = None;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Probe::Failed(e as i32),
        }
        let mut m = [0u8; 8];
        match nix::unistd::read(&rx, &mut m) {
            Ok(8) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            // EOF (or a torn message): the reader died without a result.
            _ => return Probe::Failed(libc::EINTR),
        }
        let (t, v) = m.split_at(4);
        let tag = u32::from_ne_bytes(t.try_into().unwrap_or_default());
        let value = i32::from_ne_bytes(v.try_into().unwrap_or_default());
        match tag {
            TAG_PID => pid = Some(Pid::from_raw(value)),
            TAG_RESULT if value == 0 => return Probe::Read,
            TAG_RESULT => return Probe::Failed(value),
            _ => return Probe::Failed(libc::EPROTO),
        }
    }
    // Still reading, so still alive: the pid is its own. The kill ends a wait the kernel can
    // abort; otherwise the reader ends when the server answers or dies.
    if let Some(pid) = pid {
        let _ = kill(pid, Signal::SIGKILL);
    }
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
