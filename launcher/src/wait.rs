//! Waiting for a container's command: signals forwarded, orphans reaped, the pty proxied, the
//! container's sysinfo(2) calls answered.

use std::os::fd::{AsFd, BorrowedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::sys;
use crate::sysinfo::Server;
use crate::tty::TtyProxy;
use crate::EXIT_LAUNCHER;

/// The shell's convention: the exit status, or 128+N after signal N.
fn status_code(s: WaitStatus) -> Option<u8> {
    match s {
        WaitStatus::Exited(_, c) => Some(c as u8),
        WaitStatus::Signaled(_, sig, _) => Some(128u8.wrapping_add(sig as u8)),
        _ => None,
    }
}

/// Reaps every exited child; returns `child`'s code if it was among them.
fn reap(child: Pid) -> Option<u8> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(s) if s.pid() == Some(child) => code = status_code(s).or(code),
            Ok(_) => {}
        }
    }
}

/// Waits for `child`, forwarding every signal but SIGCHLD/SIGWINCH to it, reaping any other
/// child, proxying the pty and serving `sysinfo`. Returns the exit code (128+N on signal N).
pub(crate) fn wait_loop(
    child: Pid,
    sfd: &SignalFd,
    tty: Option<TtyProxy>,
    mut sysinfo: Option<&mut Server>,
) -> u8 {
    let mut code: Option<u8> = None;
    let mut stdin_open = tty.as_ref().is_some_and(|t| t.forward_stdin);
    let mut master_open = tty.is_some();
    let mut buf = [0u8; 8192];
    // SAFETY: stdin stays open for the whole process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    loop {
        if code.is_some() && !master_open {
            break;
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(t) = &tty {
            if master_open {
                fds.push(PollFd::new(t.master(), PollFlags::POLLIN));
            }
            if stdin_open {
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            }
        }
        let sysinfo_at = fds.len();
        let listener = sysinfo.as_ref().and_then(|s| s.fd());
        if let Some(l) = listener {
            fds.push(PollFd::new(l, PollFlags::POLLIN));
        }
        // After the command exits, drain the pty briefly (a grandchild may hold the slave).
        let timeout = match (code.is_some(), &sysinfo) {
            (true, _) => PollTimeout::from(200u8),
            // Wake for the next load sample.
            (false, Some(s)) => {
                PollTimeout::from(u16::try_from(s.timeout().as_millis()).unwrap_or(u16::MAX))
            }
            (false, None) => PollTimeout::NONE,
        };
        let n = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(_) => continue,
        };
        if n == 0 && code.is_some() {
            break;
        }
        let sysinfo_revents = fds
            .get(sysinfo_at)
            .and_then(PollFd::revents)
            .unwrap_or(PollFlags::empty());
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, master_ready, stdin_ready) = (
            ready(0),
            master_open && ready(1),
            stdin_open && ready(if master_open { 2 } else { 1 }),
        );
        drop(fds);
        if let Some(s) = sysinfo.as_deref_mut() {
            s.tick();
            s.ready(sysinfo_revents);
        }
        if sig_ready {
            while let Ok(Some(si)) = sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => code = reap(child).or(code),
                    Ok(Signal::SIGWINCH) => {
                        if let Some(t) = &tty {
                            t.resize();
                        }
                    }
                    _ => forward(child, si.ssi_signo as i32),
                }
            }
        }
        let Some(t) = &tty else { continue };
        if master_ready {
            let n = sys::read_once(t.master(), &mut buf);
            match buf.get(..n) {
                Some(b) if n > 0 => sys::write_all_fd(std::io::stdout(), b),
                _ => master_open = false,
            }
        }
        if stdin_ready {
            let n = sys::read_once(stdin, &mut buf);
            match buf.get(..n) {
                Some(b) if n > 0 => t.input(b),
                _ => {
                    stdin_open = false;
                    t.send_eof();
                }
            }
        }
    }
    drop(tty);
    code.unwrap_or(EXIT_LAUNCHER)
}

/// Passes a signal on to the command. Real-time signals have no nix `Signal`, hence libc.
fn forward(child: Pid, signo: i32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(child.as_raw(), signo) };
}
