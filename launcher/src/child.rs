//! The container's pid 1 between fork and exec: namespaces, root, stdio, privileges, PATH
//! lookup, exec (or `--init`, which forks the command and stays as a reaping pid 1). Errors
//! here are `(exit code, one line)` and travel to the supervisor over a close-on-exec pipe.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cgsight_seccomp::Program;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::{AccessFlags, ForkResult};

use crate::error::child_report;
use crate::mounts::{self, RootPlan};
use crate::sys::{self, ChildResult};
use crate::userns::maps::ChildSide;
use crate::userns::{net, IdRange};
use crate::{caps, pty, wait, EXIT_LAUNCHER, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};

/// A failure before exec: the exit code to report and one line of text.
pub(crate) type ChildErr = (u8, String);

pub(crate) fn lerr(msg: impl std::fmt::Display) -> ChildErr {
    (EXIT_LAUNCHER, msg.to_string())
}

pub(crate) enum Never {}

/// The network namespace pid 1 ends up in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ChildNet {
    /// The host's.
    Host,
    /// A new one with only loopback (`--net none`).
    Empty,
    /// One prepared by the supervisor (`own`: this container's bridge namespace) or another
    /// container's.
    Join { fd: i32, own: bool },
}

/// What the child needs, prepared before fork so the child only does syscalls and I/O.
pub(crate) struct ChildPlan {
    pub root: RootPlan,
    pub hostname: String,
    pub net: ChildNet,
    pub tty: bool,
    pub interactive: bool,
    pub init: bool,
    pub workdir: PathBuf,
    pub env: Vec<CString>,
    pub path_var: String,
    pub argv: Vec<CString>,
    /// The caller's descriptors passed to the command.
    pub preserve_fds: Vec<i32>,
    /// Installed last, right before exec (`None`: unconfined).
    pub seccomp: Option<Program>,
    /// The filter hands sysinfo(2) to the supervisor: install it with a listener and send that
    /// over `ChildFds::listener`.
    pub sysinfo_notify: bool,
    /// `--userns auto`: the container's ids.
    pub userns: Option<IdRange>,
    /// `-u USER[:GROUP]`, looked up in the container's /etc/passwd and /etc/group.
    pub user: Option<String>,
    /// The capabilities kept (docker's 14, or all with `--privileged`).
    pub caps: u64,
    /// HOME was given (`-e` or the image's Env): a `-u` user's passwd home does not replace it.
    pub home_given: bool,
}

/// The child's ends of the supervisor's pipes.
pub(crate) struct ChildFds {
    /// Released (one byte) once the supervisor has put us in the cgroup.
    pub go: Option<OwnedFd>,
    /// Close-on-exec: EOF on exec, else our error report.
    pub err: Option<OwnedFd>,
    /// With -t: where the pty's master goes to the supervisor.
    pub sock: Option<OwnedFd>,
    /// `--userns auto`: our side of the id-map handshake.
    pub userns: Option<ChildSide>,
    /// With `sysinfo_notify`: where the filter's listener goes to the supervisor.
    pub listener: Option<OwnedFd>,
}

/// The command's environment: docker's defaults (PATH, HOSTNAME, HOME, and TERM with a tty),
/// then `overrides` in order, a later key replacing an earlier one. Also returns the PATH the
/// command is looked up in.
pub(crate) fn container_env<'a>(
    hostname: &str,
    tty: bool,
    overrides: impl IntoIterator<Item = &'a (String, String)>,
) -> (Vec<(String, String)>, String) {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOSTNAME".into(), hostname.to_owned()),
        ("HOME".into(), "/root".into()),
    ];
    if tty {
        env.push(("TERM".into(), "xterm".into()));
    }
    for (k, v) in overrides {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (env, path_var)
}

/// Runs in the forked child: never returns; reports a failure on `fds.err` and exits.
pub(crate) fn run(plan: &ChildPlan, mut fds: ChildFds) -> ! {
    let (code, msg) = match container_child(plan, &mut fds) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    if let Some(err) = &fds.err {
        sys::write_all_fd(err, &child_report(code, &msg));
    }
    // SAFETY: leave the forked child without running the supervisor's destructors.
    unsafe { libc::_exit(code as i32) }
}

fn container_child(plan: &ChildPlan, fds: &mut ChildFds) -> Result<Never, ChildErr> {
    // If the supervisor dies, so does the container: nobody would report its exit otherwise.
    // (getppid() is 0 here: the parent is outside our pid namespace. A supervisor that died
    // before this prctl closes the go pipe, which the read below notices.)
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let go = fds.go.take().ok_or_else(|| lerr("no go pipe"))?;
    if sys::read_once(&go, &mut [0u8; 1]) != 1 {
        return Err(lerr("the supervisor did not release the container"));
    }
    drop(go);
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    let own_netns = match plan.net {
        ChildNet::Host => false,
        ChildNet::Empty => {
            flags |= CloneFlags::CLONE_NEWNET;
            true
        }
        ChildNet::Join { fd, own } => {
            // SAFETY: the supervisor keeps this descriptor open until we have exec'd.
            let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| lerr(format!("joining the network namespace: {e}")))?;
            own
        }
    };
    // The cgroup ns is made now that we are in our cgroup, so that cgroup is its root.
    nix::sched::unshare(flags).map_err(|e| lerr(format!("unshare: {e}")))?;
    if let (Some(range), true) = (&plan.userns, own_netns) {
        // While /proc is the host's and we are host root: the net namespace is ours.
        net::open_low_ports_and_ping(range).map_err(lerr)?;
    }
    let last = caps::last_cap();
    mounts::build_root(&plan.root).map_err(lerr)?;
    nix::unistd::sethostname(&plan.hostname).map_err(|e| lerr(format!("sethostname: {e}")))?;
    if matches!(plan.net, ChildNet::Empty) {
        mounts::loopback_up().map_err(lerr)?;
    }
    if plan.tty {
        // The pty comes from the container's own devpts (we are in its mount namespace now).
        let p = pty::open().map_err(lerr)?;
        let sock = fds.sock.as_ref().ok_or_else(|| lerr("no pty socket"))?;
        send_fd(sock, &p.master).map_err(lerr)?;
        drop(p.master);
        pty::attach_stdio(p.slave).map_err(lerr)?;
    } else if !plan.interactive {
        pty::devnull_stdin().map_err(lerr)?;
    }
    drop(fds.sock.take());
    if !plan.workdir.is_dir() {
        let _ = fs::create_dir_all(&plan.workdir);
    }
    nix::unistd::chdir(&plan.workdir)
        .map_err(|e| lerr(format!("chdir {}: {e}", plan.workdir.display())))?;
    // A fresh anonymous session keyring (runc's too): the container does not share the
    // launching shell's session keys. Kernels without keys return ENOSYS; nothing to join.
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) with integer arguments.
    unsafe { libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, 0 as libc::c_long) };
    if let Some(side) = fds.userns.take() {
        // Last of the namespaces, after pivot_root and everything host root had to do.
        side.enter().map_err(lerr)?;
    }
    caps::restrict(plan.caps, last).map_err(lerr)?;
    // Borrowed unless -u changes HOME: no copy of the environment on the common path.
    let env: std::borrow::Cow<'_, [CString]> = match &plan.user {
        Some(u) => switch_user(u, &plan.env, plan.home_given)?.into(),
        None => (&plan.env[..]).into(),
    };
    sys::close_inherited_fds(&plan.preserve_fds).map_err(lerr)?;
    let first = plan.argv.first().ok_or_else(|| lerr("no command given"))?;
    let prog = resolve(first, &plan.path_var)?;
    // Last: after no_new_privs (which the kernel requires for an unprivileged filter) and
    // the capability drop, so nothing of our own set-up runs under the filter.
    match (&plan.seccomp, plan.sysinfo_notify) {
        (Some(p), true) => install_with_listener(p, fds.listener.take())?,
        (p, _) => install_seccomp(p.as_ref())?,
    }
    if plan.init {
        run_init(plan, &prog, &env, fds)
    } else {
        exec(&prog, &plan.argv, &env)
    }
}

/// Becomes `-u USER[:GROUP]` (looked up in the container's files) and returns `env` with HOME
/// set to the user's home, as docker does, unless HOME was given.
pub(crate) fn switch_user(
    user: &str,
    env: &[CString],
    home_given: bool,
) -> Result<Vec<CString>, ChildErr> {
    let ids = crate::user::lookup(user).map_err(lerr)?;
    crate::user::switch(&ids).map_err(lerr)?;
    let mut env = env.to_vec();
    if !home_given {
        let home = ids.home.as_deref().filter(|h| !h.is_empty()).unwrap_or("/");
        env.retain(|e| !e.as_bytes().starts_with(b"HOME="));
        env.push(CString::new(format!("HOME={home}")).map_err(lerr)?);
    }
    Ok(env)
}

/// Installs the container's filter (allocation-free), if it has one.
pub(crate) fn install_seccomp(p: Option<&Program>) -> Result<(), ChildErr> {
    match p {
        Some(p) => p
            .install()
            .map_err(|e| lerr(format!("installing the seccomp filter: {e}"))),
        None => Ok(()),
    }
}

/// Installs the filter with a listener and hands the listener to the supervisor. Closed here
/// before exec: the container must never hold the fd that answers its own calls.
fn install_with_listener(p: &Program, sock: Option<OwnedFd>) -> Result<(), ChildErr> {
    let sock = sock.ok_or_else(|| lerr("no listener socket"))?;
    let listener = p.install_with_listener().map_err(|e| {
        lerr(format!(
            "installing the seccomp filter with a listener: {e}"
        ))
    })?;
    send_fd(&sock, &listener).map_err(lerr)
}

fn send_fd(sock: &OwnedFd, fd: &OwnedFd) -> ChildResult<()> {
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(b"t")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("sending a descriptor to the supervisor: {e}"))
}

/// PATH search inside the container (execvpe would search the launcher's PATH).
pub(crate) fn resolve(arg0: &CString, path: &str) -> Result<CString, ChildErr> {
    let name = arg0.as_bytes();
    if name.contains(&b'/') {
        return Ok(arg0.clone());
    }
    let mut found_noexec = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(OsStr::from_bytes(name));
        if fs::metadata(&cand).is_ok_and(|m| m.is_file()) {
            let c = CString::new(cand.as_os_str().as_bytes()).map_err(lerr)?;
            if nix::unistd::access(c.as_c_str(), AccessFlags::X_OK).is_ok() {
                return Ok(c);
            }
            found_noexec.get_or_insert(c);
        }
    }
    found_noexec.ok_or_else(|| {
        (
            EXIT_NOT_FOUND,
            format!(
                "{:?}: executable file not found in $PATH",
                String::from_utf8_lossy(name)
            ),
        )
    })
}

/// Default dispositions and an empty mask before exec: Rust's runtime ignores SIGPIPE, and
/// the supervisor blocks everything; the command must inherit neither.
fn reset_signals() {
    for s in Signal::iterator() {
        if s != Signal::SIGKILL && s != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL (no handler code runs).
            let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

pub(crate) fn exec(prog: &CString, argv: &[CString], env: &[CString]) -> Result<Never, ChildErr> {
    reset_signals();
    let e = match nix::unistd::execve(prog, argv, env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let shown = prog.to_string_lossy();
    Err(match e {
        Errno::ENOENT => (
            EXIT_NOT_FOUND,
            format!("{shown}: no such file or directory"),
        ),
        e => (EXIT_NOT_EXECUTABLE, format!("{shown}: cannot execute: {e}")),
    })
}

/// `--init`: pid 1 stays ours, forks the command, forwards signals to it and reaps every
/// orphan; exits with the command's status.
fn run_init(
    plan: &ChildPlan,
    prog: &CString,
    env: &[CString],
    fds: &mut ChildFds,
) -> Result<Never, ChildErr> {
    let signals = sys::block_all_signals().map_err(|e| lerr(format!("signalfd: {e}")))?;
    // SAFETY: the child is single-threaded; the forked command only execs or reports.
    match unsafe { nix::unistd::fork() }.map_err(|e| lerr(format!("fork: {e}")))? {
        ForkResult::Child => {
            let (code, msg) = match exec(prog, &plan.argv, env) {
                Ok(n) => match n {},
                Err(e) => e,
            };
            if let Some(w) = &fds.err {
                sys::write_all_fd(w, &child_report(code, &msg));
            }
            // SAFETY: exit the forked child.
            unsafe { libc::_exit(code as i32) }
        }
        ForkResult::Parent { child } => {
            drop(fds.err.take());
            sys::close_fds_except(signals.fd.as_raw_fd());
            let code = wait::wait_loop(child, &signals.fd, None, None);
            // SAFETY: exit pid 1 with the command's status.
            unsafe { libc::_exit(code as i32) }
        }
    }
}
