//! The one start-up handshake for everything that runs on in the background (`launch -d`,
//! `cgsight fs`, and the views daemon a launch starts): fork, setsid, and the child reports
//! "ready", "already serving" or why it failed over a pipe; the parent returns that report.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};

use crate::sys;
use crate::LaunchError;

/// What a starting daemon tells the process waiting for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Up and serving.
    Ready,
    /// Another instance already does the job (the message says which).
    AlreadyServing(String),
    /// Start-up failed: the exit code to return, and why.
    Failed { code: u8, msg: String },
    /// Parent side only: the child ended without reporting.
    Silent,
    /// Parent side only: no report within the timeout (the child was killed).
    TimedOut,
}

impl Report {
    fn encode(&self) -> Vec<u8> {
        match self {
            Report::Ready => vec![b'R'],
            Report::AlreadyServing(m) => [b"A", m.as_bytes()].concat(),
            Report::Failed { code, msg } => [&[b'F', *code][..], msg.as_bytes()].concat(),
            Report::Silent | Report::TimedOut => Vec::new(),
        }
    }

    /// Decodes one message; anything unrecognised counts as no report.
    pub fn decode(b: &[u8]) -> Report {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match b {
            [b'R', ..] => Report::Ready,
            [b'A', m @ ..] => Report::AlreadyServing(text(m)),
            [b'F', code, m @ ..] => Report::Failed {
                code: *code,
                msg: text(m),
            },
            _ => Report::Silent,
        }
    }
}

/// The child's end of the handshake: sends one report, then closes.
pub struct Notifier(Option<OwnedFd>);

impl Notifier {
    /// Nobody waits (a foreground run).
    pub fn none() -> Self {
        Notifier(None)
    }

    /// The descriptor a parent passed down (`cgsight fs --startup-fd N`). It is made
    /// close-on-exec so nothing we start inherits it.
    pub fn inherited(fd: RawFd) -> Result<Self, LaunchError> {
        // SAFETY: F_GETFD only checks that the number is an open descriptor.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(borrowed, FcntlArg::F_GETFD).map_err(LaunchError::sys("--startup-fd"))?;
        fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(LaunchError::sys("--startup-fd"))?;
        // SAFETY: the fd is open and was handed to us to own.
        Ok(Notifier(Some(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Sends `r` once (one write, far below PIPE_BUF); later calls do nothing.
    pub fn send(&mut self, r: &Report) {
        if let Some(fd) = self.0.take() {
            sys::write_all_fd(&fd, &r.encode());
        }
    }

    /// Keeps the descriptor open across exec (for a child that reports itself).
    fn inheritable_fd(&self) -> Option<RawFd> {
        let fd = self.0.as_ref()?;
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).ok()?;
        Some(fd.as_raw_fd())
    }
}

/// Closes every descriptor from 3 up that our caller left open to us, except `keep` (the
/// start-up pipe): a daemon holding a caller's pipe would keep that caller from seeing EOF.
pub fn close_inherited(keep: Option<RawFd>) {
    sys::close_fds_except(keep.unwrap_or(-1));
}

/// Where the daemon's output goes (None: /dev/null), and how long the parent waits.
#[derive(Default)]
pub struct Detach<'a> {
    pub stdout: Option<BorrowedFd<'a>>,
    pub stderr: Option<BorrowedFd<'a>>,
    pub timeout: Option<Duration>,
}

pub enum Forked {
    /// In the caller: the child's pid and its report.
    Parent { pid: Pid, report: Report },
    /// In the new session: report through this, then carry on as the daemon.
    Child(Notifier),
}

/// Forks a daemon. Must be called while the process is single-threaded.
pub fn daemonize(io: &Detach<'_>) -> Result<Forked, LaunchError> {
    let (r, w) = sys::pipe_cloexec()?;
    // SAFETY: the caller guarantees a single-threaded process, so the child may run our code.
    match unsafe { nix::unistd::fork() }.map_err(LaunchError::sys("fork"))? {
        ForkResult::Child => {
            drop(r);
            let mut n = Notifier(Some(w));
            if let Err(e) = detach_stdio(io) {
                n.send(&Report::Failed {
                    code: e.code(),
                    msg: e.to_string(),
                });
                // SAFETY: leave the forked child without running the caller's destructors.
                unsafe { libc::_exit(e.code().into()) }
            }
            Ok(Forked::Child(n))
        }
        ForkResult::Parent { child } => {
            drop(w);
            Ok(Forked::Parent {
                pid: child,
                report: read_report(r.as_fd(), child, io.timeout),
            })
        }
    }
}

fn detach_stdio(io: &Detach<'_>) -> Result<(), LaunchError> {
    nix::unistd::setsid().map_err(LaunchError::sys("setsid"))?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(LaunchError::sys("opening /dev/null"))?;
    let null = null.as_fd();
    nix::unistd::dup2_stdin(null).map_err(LaunchError::sys("dup2"))?;
    nix::unistd::dup2_stdout(io.stdout.unwrap_or(null)).map_err(LaunchError::sys("dup2"))?;
    nix::unistd::dup2_stderr(io.stderr.unwrap_or(null)).map_err(LaunchError::sys("dup2"))?;
    Ok(())
}

/// One message: read it, do not wait for EOF (a `--init` container's pid 1 is a fork of the
/// supervisor and holds the write end until the container exits).
fn read_report(r: BorrowedFd<'_>, child: Pid, timeout: Option<Duration>) -> Report {
    if let Some(t) = timeout {
        let ms = u16::try_from(t.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(r, PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, PollTimeout::from(ms)) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(0) => {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Report::TimedOut;
                }
                _ => break,
            }
        }
    }
    let mut buf = [0u8; 4096];
    let n = sys::read_once(r, &mut buf);
    Report::decode(buf.get(..n).unwrap_or_default())
}

/// Daemonizes and execs `argv` in the child, which reports through `--startup-fd <fd>`
/// (appended to `argv`). Returns the child's report.
pub fn spawn_reporting(argv: &[std::ffi::CString], io: &Detach<'_>) -> Result<Report, LaunchError> {
    match daemonize(io)? {
        Forked::Parent { report, .. } => Ok(report),
        Forked::Child(mut n) => {
            // The daemon keeps none of our caller's descriptors, only the report pipe.
            let _ = sys::close_inherited_fds(&[]);
            let err = match n.inheritable_fd() {
                Some(fd) => {
                    let mut full = argv.to_vec();
                    // Digits and a flag name: no NUL byte can occur.
                    full.push(c"--startup-fd".to_owned());
                    full.push(std::ffi::CString::new(fd.to_string()).unwrap_or_default());
                    let e = match argv.first() {
                        Some(prog) => nix::unistd::execv(prog, &full).err(),
                        None => None,
                    };
                    format!(
                        "exec: {}",
                        e.map_or_else(|| "no program".into(), |e| e.to_string())
                    )
                }
                None => "cannot pass the start-up pipe".into(),
            };
            n.send(&Report::Failed { code: 1, msg: err });
            // SAFETY: leave the forked child.
            unsafe { libc::_exit(1) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn reports_round_trip_and_garbage_is_no_report() {
        for r in [
            Report::Ready,
            Report::AlreadyServing("pid 7 serves /x".into()),
            Report::Failed {
                code: 125,
                msg: "no: \u{e9}".into(),
            },
        ] {
            assert_eq!(Report::decode(&r.encode()), r);
        }
        for junk in [&b""[..], b"F", b"?x", b"\xff"] {
            assert_eq!(Report::decode(junk), Report::Silent, "{junk:?}");
        }
    }
}
