//! `cgsight exec`: run a command in a running container. Joins its cgroup, then every
//! namespace of its init (cgroup, ipc, uts, net, time, pid, mount), and forks so the command
//! is a member of the pid namespace; same privileges as the container's command.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use cgsight_cgroup::{Hierarchies, Managed};
use nix::sched::CloneFlags;
use nix::unistd::ForkResult;

use crate::child::{
    container_env, exec as do_exec, install_seccomp, lerr, resolve, switch_user, ChildErr,
};
use crate::error::child_report;
use crate::security::Userns;
use crate::state::{State, Status};
use crate::tty::TtyProxy;
use crate::userns::maps;
use crate::{caps, pty, security, sys, wait, LaunchError};

pub struct ExecRequest {
    pub command: Vec<String>,
    pub tty: bool,
    pub interactive: bool,
    pub env: Vec<(String, String)>,
    pub workdir: Option<PathBuf>,
    /// Descriptors 3..3+N passed to the command (every other one is closed).
    pub preserve_fds: u32,
    /// `-u USER[:GROUP]`; `None`: the container's own user (its `-u` or the image's User).
    pub user: Option<String>,
}

/// The namespaces joined, in order (the mount namespace last: /proc changes with it).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    // nix has no CLONE_NEWTIME constant; the kernel's value is passed through.
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

pub fn exec(st: &State, req: &ExecRequest) -> Result<u8, LaunchError> {
    // First, before we open descriptors of our own.
    let preserved = sys::preserved_fds(req.preserve_fds);
    let pid = match (st.status, st.pid) {
        (Status::Running, Some(p)) => p,
        _ => return Err(LaunchError::NotRunning(st.name.clone())),
    };
    if req.command.is_empty() {
        return Err(LaunchError::NoCommand);
    }
    // On the host's filesystem (the cache), before joining the mount namespace.
    let mask = st.spec.security.caps();
    // Without the sysinfo notify rule: an exec'd process has no supervisor serving a listener
    // of its own, so its sysinfo(2) is the kernel's (the host's numbers).
    let seccomp = security::seccomp_program(&st.spec.security, mask, false)?.map(|f| f.program);
    // Open every namespace first: after joining the mount ns, /proc is the container's.
    let mut nss = Vec::new();
    for (k, flag) in NAMESPACES {
        let p = format!("/proc/{pid}/ns/{k}");
        match File::open(&p) {
            Ok(f) => nss.push((k, flag, f)),
            Err(e) if k == "time" && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LaunchError::io(format!("opening {p}"))(e)),
        }
    }
    // Joined last, in the forked child: after it host root's privileges over the rest end.
    let userns = if st.spec.security.userns == Userns::Auto {
        let p = format!("/proc/{pid}/ns/user");
        Some(File::open(&p).map_err(LaunchError::io(format!("opening {p}")))?)
    } else {
        None
    };
    let h = Hierarchies::detect().map_err(LaunchError::cgroup("cgroup layout"))?;
    Managed::open(&h, &st.cgroup_path)
        .attach(std::process::id() as i32)
        .map_err(LaunchError::cgroup("joining the container's cgroup"))?;
    for (k, flag, f) in &nss {
        nix::sched::setns(f, *flag)
            .map_err(|e| LaunchError::io(format!("joining the {k} namespace"))(e.into()))?;
    }
    drop(nss);
    let wd = req
        .workdir
        .clone()
        .or_else(|| st.spec.workdir.clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    nix::unistd::chdir(&wd)
        .map_err(|e| LaunchError::io(format!("chdir {}", wd.display()))(e.into()))?;

    let (env, path_var) = container_env(
        &st.spec.hostname,
        req.tty,
        st.spec.env.iter().chain(req.env.iter()),
    );
    let envc = sys::cstrings(env.iter().map(|(k, v)| format!("{k}={v}")))?;
    let user = req.user.clone().or_else(|| st.spec.user.clone());
    let home_given = st
        .spec
        .env
        .iter()
        .chain(req.env.iter())
        .any(|(k, _)| k == "HOME");
    let argv = sys::cstrings(&req.command)?;
    let arg0 = argv.first().ok_or(LaunchError::NoCommand)?.clone();

    // The pty comes from the container's devpts (we are in its mount namespace now).
    let pty = if req.tty { Some(pty::open()?) } else { None };
    let signals = sys::block_all_signals().map_err(LaunchError::sys("blocking signals"))?;
    let (err_r, err_w) = sys::pipe_cloexec()?;
    let last = caps::last_cap();
    // SAFETY: single-threaded; the child only runs our code then execs.
    let child = match unsafe { nix::unistd::fork() }.map_err(LaunchError::sys("fork"))? {
        ForkResult::Child => {
            drop(err_r);
            let r = (|| -> Result<(), ChildErr> {
                if let Some(p) = pty {
                    drop(p.master);
                    pty::attach_stdio(p.slave).map_err(lerr)?;
                } else if !req.interactive {
                    pty::devnull_stdin().map_err(lerr)?;
                }
                if let Some(u) = &userns {
                    maps::join(u.as_fd()).map_err(lerr)?;
                }
                caps::restrict(mask, last).map_err(lerr)?;
                let envc = match &user {
                    Some(u) => switch_user(u, &envc, home_given)?,
                    None => envc.clone(),
                };
                sys::close_inherited_fds(&preserved).map_err(lerr)?;
                let prog = resolve(&arg0, &path_var)?;
                install_seccomp(seccomp.as_ref())?;
                match do_exec(&prog, &argv, &envc)? {}
            })();
            let (code, msg) = r.err().unwrap_or_else(|| lerr("exec returned"));
            sys::write_all_fd(&err_w, &child_report(code, &msg));
            // SAFETY: leave the forked child.
            unsafe { libc::_exit(code as i32) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(err_w);
    let err = sys::read_to_end_fd(&err_r);
    drop(err_r);
    if let Some(e) = LaunchError::from_child_report(&err) {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(e);
    }
    let tty = pty.map(|p| {
        drop(p.slave);
        TtyProxy::new(p.master, req.interactive)
    });
    let code = wait::wait_loop(child, &signals.fd, tty, None);
    drop(signals);
    Ok(code)
}
