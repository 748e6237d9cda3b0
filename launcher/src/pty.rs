//! Pseudo-terminals for `launch -t` and `exec -t`: one opener, and the child's side (session,
//! controlling terminal, stdio, window size).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::LaunchError;

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(tiocsctty, libc::TIOCSCTTY);

/// Both ends of a new pty from the devpts of the current mount namespace, close-on-exec.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

pub fn open() -> Result<Pty, LaunchError> {
    let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(LaunchError::sys("opening /dev/ptmx"))?;
    nix::pty::grantpt(&m).map_err(LaunchError::sys("grantpt"))?;
    nix::pty::unlockpt(&m).map_err(LaunchError::sys("unlockpt"))?;
    let name = nix::pty::ptsname_r(&m).map_err(LaunchError::sys("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(LaunchError::sys("opening the pty's slave"))?;
    // SAFETY: into_raw_fd hands over sole ownership of the master fd.
    let master = unsafe { OwnedFd::from_raw_fd(m.into_raw_fd()) };
    Ok(Pty { master, slave })
}

/// The window size of our terminal (stdin's, else stdout's), if either is one.
pub fn our_winsize() -> Option<libc::winsize> {
    [0, 1].into_iter().find_map(|fd| {
        // SAFETY: all-zero is a valid winsize.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into a valid pointer.
        unsafe { tiocgwinsz(fd, &mut ws) }.ok().map(|_| ws)
    })
}

/// Gives `pty` (either end) the size of our terminal, if we have one.
pub fn copy_winsize(pty: BorrowedFd<'_>) {
    if let Some(ws) = our_winsize() {
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        let _ = unsafe { tiocswinsz(pty.as_raw_fd(), &ws) };
    }
}

/// In the child, before exec: our terminal's size onto the pty first (a fast command asks
/// for it at once, and the supervisor only gets the master later), then a new session with
/// the pty as controlling terminal and stdin/stdout/stderr.
pub fn attach_stdio(slave: OwnedFd) -> Result<(), LaunchError> {
    copy_winsize(slave.as_fd());
    nix::unistd::setsid().map_err(LaunchError::sys("setsid"))?;
    // SAFETY: TIOCSCTTY with an integer argument on a terminal fd we own.
    unsafe { tiocsctty(slave.as_raw_fd(), 0) }.map_err(LaunchError::sys("TIOCSCTTY"))?;
    nix::unistd::dup2_stdin(&slave).map_err(LaunchError::sys("dup2 stdin"))?;
    nix::unistd::dup2_stdout(&slave).map_err(LaunchError::sys("dup2 stdout"))?;
    nix::unistd::dup2_stderr(&slave).map_err(LaunchError::sys("dup2 stderr"))?;
    Ok(())
}

/// stdin from /dev/null (a command without -i must not read the caller's input).
pub fn devnull_stdin() -> Result<(), LaunchError> {
    let fd = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(LaunchError::sys("opening /dev/null"))?;
    nix::unistd::dup2_stdin(&fd).map_err(LaunchError::sys("dup2 stdin"))
}
