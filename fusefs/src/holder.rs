//! The holder: the process that owns the mount and its /dev/fuse descriptor for the whole
//! life of the views, so no server's death or upgrade breaks them.
//!
//! It mounts, answers INIT, then only starts servers (each handed the descriptor, see
//! [`crate::handed`]) and waits for signals: SIGCHLD (its server died: start another, which
//! asks the kernel to resend what the dead one had read), SIGHUP (upgrade: start the binary
//! now on disk, and stop the old server once the new one serves), SIGTERM/SIGINT (stop the
//! server, unmount). It runs no view code, so there is little in it to crash or to upgrade.
//! Its servers die with it: killing the holder is a total loss of the connection.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::Error;
use crate::handed::{ENV_FD, ENV_KERNEL_MINOR, ENV_LISTEN_FD, ENV_READY_FD, ENV_RESEND};
use crate::mount::{detach, prepare_mountpoint, Prepared};
use crate::session::{self, InitState};

/// How long a new server may take to report serving (a cold start under TCG is slow).
const READY_WAIT: Duration = Duration::from_secs(30);
/// Restarts of a server that keeps dying young before the holder gives up.
const MAX_QUICK_DEATHS: u32 = 5;

/// What the holder mounts and how it starts a server.
pub struct HoldConfig {
    pub mountpoint: PathBuf,
    /// The server binary, started anew from this path each time (so an upgrade runs what
    /// is on disk now), with these arguments.
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// A socket every server gets (`cgsight daemon`'s /metrics listener), at descriptor 5.
    pub listener: Option<OwnedFd>,
    /// Where the holder records each change (a sequence number, the server's pid, what
    /// happened: started, restarted, upgraded, upgrade failed: …), read by `--upgrade`.
    pub status: PathBuf,
}

struct Server {
    pid: Pid,
    started: Instant,
}

/// Unmounts (and removes a mount point it made) when the holder ends, however it ends.
struct Mounted<'a> {
    mp: &'a Path,
    created: bool,
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if nix::mount::umount2(self.mp, nix::mount::MntFlags::empty()).is_err() {
            let _ = detach(self.mp);
        }
        if self.created {
            let _ = std::fs::remove_dir(self.mp);
        }
    }
}

/// Mounts the views, starts the first server, calls `on_ready` once it serves, and keeps
/// the views alive until SIGTERM or SIGINT. Blocks SIGTERM, SIGINT, SIGHUP and SIGCHLD in
/// the calling thread (threads `on_ready` starts inherit that).
pub fn hold(cfg: &HoldConfig, on_ready: impl FnOnce()) -> Result<(), Error> {
    let mp = cfg.mountpoint.as_path();
    let created = match prepare_mountpoint(mp)? {
        Prepared::Serving => return Err(Error::AlreadyServing(mp.to_owned())),
        Prepared::Created => true,
        Prepared::Found => false,
    };
    let io = |what: &'static str, source: std::io::Error| Error::Io {
        path: mp.to_owned(),
        what,
        source,
    };
    let fd = match session::mount(mp) {
        Ok(fd) => fd,
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(mp);
            }
            return Err(e);
        }
    };
    let _mounted = Mounted { mp, created };
    let init = session::answer_init(fd.as_fd()).map_err(|e| io("answering FUSE INIT", e))?;
    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| io("blocking signals", e.into()))?;
    let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| io("making a signalfd", e.into()))?;
    let mut seq = 1u64;
    let mut server =
        start_server(cfg, &fd, init, false).map_err(|e| io("starting the server", e))?;
    write_status(&cfg.status, seq, server.pid, "started");
    on_ready();
    let mut quick_deaths = 0;
    // Servers replaced by an upgrade, not yet exited.
    let mut replaced = Vec::new();
    loop {
        let sig = match sfd.read_signal() {
            Ok(Some(s)) => s.ssi_signo as i32,
            Ok(None) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io("reading signals", e.into())),
        };
        match Signal::try_from(sig) {
            Ok(Signal::SIGCHLD) => {
                if !reap(server.pid, &mut replaced) {
                    continue;
                }
                quick_deaths = if server.started.elapsed() < Duration::from_secs(2) {
                    quick_deaths + 1
                } else {
                    0
                };
                if quick_deaths > MAX_QUICK_DEATHS {
                    tracing::error!("the views server keeps dying at start: giving up, unmounting");
                    break;
                }
                // Back off a server that dies young; restart a long-lived one at once.
                std::thread::sleep(Duration::from_millis(100) * quick_deaths * quick_deaths);
                match start_server(cfg, &fd, init, true) {
                    Ok(s) => {
                        seq += 1;
                        tracing::info!(pid = s.pid.as_raw(), "views server restarted");
                        write_status(&cfg.status, seq, s.pid, "restarted");
                        server = s;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "restarting the views server");
                        // Try again through the same path (its exit raises SIGCHLD, or
                        // it never started): count it as a quick death.
                        server = Server {
                            pid: Pid::from_raw(-1),
                            started: Instant::now(),
                        };
                        let _ = kill(Pid::this(), Signal::SIGCHLD);
                    }
                }
            }
            Ok(Signal::SIGHUP) => match start_server(cfg, &fd, init, false) {
                Ok(new) => {
                    seq += 1;
                    let _ = kill(server.pid, Signal::SIGTERM);
                    replaced.push(server.pid);
                    tracing::info!(
                        old = server.pid.as_raw(),
                        new = new.pid.as_raw(),
                        "views server upgraded"
                    );
                    write_status(&cfg.status, seq, new.pid, "upgraded");
                    server = new;
                }
                Err(e) => {
                    tracing::error!(error = %e, "upgrade: the new server did not start; the old one goes on");
                    seq += 1;
                    write_status(
                        &cfg.status,
                        seq,
                        server.pid,
                        &format!("upgrade failed: {e}"),
                    );
                }
            },
            _ => break,
        }
    }
    tracing::info!("stopping the views server and unmounting");
    for pid in replaced {
        stop(pid);
    }
    stop(server.pid);
    Ok(())
}

/// Reaps the servers that exited: old ones replaced by an upgrade, and the current one
/// (whether it died). Only our servers: the caller may have children of its own to wait for.
fn reap(server: Pid, old: &mut Vec<Pid>) -> bool {
    let exited = |pid: Pid| match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(format!("exit code {code}")),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(format!("signal {sig}")),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    old.retain(|&pid| exited(pid).is_none());
    if server.as_raw() < 0 {
        return true;
    }
    match exited(server) {
        Some(how) => {
            tracing::warn!(pid = server.as_raw(), "views server ended: {how}");
            true
        }
        None => false,
    }
}

/// SIGTERM, then SIGKILL past a bound; waits for the exit.
fn stop(pid: Pid) {
    if pid.as_raw() <= 0 {
        return;
    }
    let _ = kill(pid, Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return;
            }
            _ => return,
        }
    }
}

/// Starts a server on the connection and waits until it reports serving.
fn start_server(
    cfg: &HoldConfig,
    fd: &OwnedFd,
    init: InitState,
    resend: bool,
) -> std::io::Result<Server> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(&cfg.args)
        .env(ENV_FD, "3")
        .env(ENV_READY_FD, "4")
        .env(ENV_KERNEL_MINOR, init.kernel_minor.to_string())
        .env(ENV_RESEND, if resend { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let listen = cfg.listener.as_ref().map_or(-1, |l| l.as_raw_fd());
    if listen >= 0 {
        cmd.env(ENV_LISTEN_FD, "5");
    }
    let (f, wr) = (fd.as_raw_fd(), w.as_raw_fd());
    let holder = nix::unistd::getpid().as_raw();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, sigprocmask, getppid,
    // fcntl, dup2): the server dies with the holder (a server nobody restarts is a hang waiting
    // to happen; the holder's death is a total loss, repaired by the next `cgsight fs`), and
    // the descriptors move to 3, 4 (and 5) (dup2 clears close-on-exec), via numbers above both.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The holder blocks the signals it reads from its signalfd; a server must get
            // them as signals (its agent's SIGTERM handler, for one).
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::getppid() != holder {
                return Err(std::io::Error::other("the holder is gone"));
            }
            // All above 10 first: a source may be 3, 4 or 5 itself.
            let a = libc::fcntl(f, libc::F_DUPFD_CLOEXEC, 10);
            let b = libc::fcntl(wr, libc::F_DUPFD_CLOEXEC, 10);
            let c = if listen >= 0 {
                libc::fcntl(listen, libc::F_DUPFD_CLOEXEC, 10)
            } else {
                -1
            };
            if a < 0 || b < 0 || (listen >= 0 && c < 0) {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 || (c >= 0 && libc::dup2(c, 5) < 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(w);
    let pid = Pid::from_raw(child.id() as i32);
    // Reaped by the SIGCHLD path, not by std.
    drop(child);
    let mut pfd = [nix::poll::PollFd::new(
        r.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = READY_WAIT.as_millis() as u16;
    let ready = match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms.max(1))) {
        Ok(n) if n > 0 => {
            let mut b = [0u8; 1];
            matches!(nix::unistd::read(&r, &mut b), Ok(1))
        }
        _ => false,
    };
    if !ready {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(std::io::Error::other(format!(
            "{} did not report serving",
            cfg.exe.display()
        )));
    }
    Ok(Server {
        pid,
        started: Instant::now(),
    })
}

/// `SEQ PID\nNOTE\n`, replaced atomically.
fn write_status(path: &Path, seq: u64, pid: Pid, note: &str) {
    let tmp = path.with_extension("server.tmp");
    let text = format!("{seq} {}\n{note}\n", pid.as_raw());
    if std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::debug!(path = %path.display(), "writing the holder status");
    }
}

/// The holder's status: (sequence number, server pid, what the last change was).
pub fn read_status(path: &Path) -> Option<(u64, i32, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let mut head = lines.next()?.split_whitespace();
    let seq = head.next()?.parse().ok()?;
    let pid = head.next()?.parse().ok()?;
    Some((seq, pid, lines.next().unwrap_or_default().to_owned()))
}
