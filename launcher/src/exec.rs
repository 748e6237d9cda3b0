//! `cgsight exec`: run a command in a running container. Joins its cgroup, then every
//! namespace of its init (cgroup, ipc, uts, net, time, pid, mount), and forks so the command
//! is a member of the pid namespace; same privileges as the container's command.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use cgsight_cgroup::{Hierarchies, Managed};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::caps;
use crate::process::{exec as do_exec, resolve, wait_loop, LaunchError, TtyProxy};
use crate::state::{State, Status};
use crate::sys::{self, cstring};

pub struct ExecRequest {
    pub command: Vec<String>,
    pub tty: bool,
    pub interactive: bool,
    pub env: Vec<(String, String)>,
    pub workdir: Option<PathBuf>,
}

pub fn exec(st: &State, req: &ExecRequest) -> Result<u8, LaunchError> {
    let pid = match (st.status, st.pid) {
        (Status::Running, Some(p)) => p,
        _ => {
            return Err(LaunchError::launcher(format!(
                "container {} is not running",
                st.name
            )))
        }
    };
    if req.command.is_empty() {
        return Err(LaunchError::launcher("no command given"));
    }
    let l = LaunchError::launcher;
    // Open every namespace first: after joining the mount ns, /proc is the container's.
    let kinds = [
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("time", libc::CLONE_NEWTIME),
        ("pid", libc::CLONE_NEWPID),
        ("mnt", libc::CLONE_NEWNS),
    ];
    let mut nss = Vec::new();
    for (k, flag) in kinds {
        let p = format!("/proc/{pid}/ns/{k}");
        match File::open(&p) {
            Ok(f) => nss.push((k, flag, f)),
            Err(e) if k == "time" && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(l(format!("opening {p}: {e}"))),
        }
    }
    let h = Hierarchies::detect().map_err(|e| l(e.to_string()))?;
    Managed::open(&h, &st.cgroup_path)
        .attach(std::process::id() as i32)
        .map_err(|e| l(format!("joining the container's cgroup: {e}")))?;
    for (k, flag, f) in &nss {
        // SAFETY: setns with an fd of a namespace file.
        if unsafe { libc::setns(f.as_raw_fd(), *flag) } != 0 {
            return Err(l(format!(
                "joining the {k} namespace: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    drop(nss);
    let wd = req
        .workdir
        .clone()
        .or_else(|| st.spec.workdir.clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    nix::unistd::chdir(&wd).map_err(|e| l(format!("chdir {}: {e}", wd.display())))?;

    let (env, path_var) = crate::process::container_env(
        &st.spec.hostname,
        req.tty,
        st.spec.env.iter().chain(req.env.iter()),
    );
    let envc: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(l)?;
    let argv: Vec<CString> = req
        .command
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()
        .map_err(l)?;

    // The pty comes from the container's devpts (we are in its mount namespace now).
    let pty = if req.tty {
        use nix::fcntl::OFlag;
        let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(|e| l(format!("opening /dev/ptmx: {e}")))?;
        nix::pty::grantpt(&m).map_err(|e| l(format!("grantpt: {e}")))?;
        nix::pty::unlockpt(&m).map_err(|e| l(format!("unlockpt: {e}")))?;
        let name = nix::pty::ptsname_r(&m).map_err(|e| l(format!("ptsname: {e}")))?;
        Some((m, name))
    } else {
        None
    };

    let all = SigSet::all();
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old))
        .map_err(|e| l(format!("sigprocmask: {e}")))?;
    let sfd = SignalFd::with_flags(&all, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| l(format!("signalfd: {e}")))?;
    let (err_r, err_w) = sys::pipe_cloexec().map_err(|e| l(format!("pipe: {e}")))?;
    let last = caps::last_cap();
    // SAFETY: single-threaded; the child only runs our code then execs.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(l(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if child == 0 {
        sys::close(err_r);
        let r = (|| {
            if let Some((_, name)) = &pty {
                let slave = nix::fcntl::open(
                    name.as_str(),
                    nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| (125u8, format!("opening {name}: {e}")))?;
                // SAFETY: session/ctty/dup2 on an fd we own.
                unsafe {
                    libc::setsid();
                    libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0);
                    for fd in 0..3 {
                        libc::dup2(slave.as_raw_fd(), fd);
                    }
                }
            } else if !req.interactive {
                if let Ok(f) = File::open("/dev/null") {
                    // SAFETY: dup2 onto stdin.
                    unsafe { libc::dup2(f.as_raw_fd(), 0) };
                }
            }
            caps::restrict(last).map_err(|m| (125u8, m))?;
            let prog = resolve(&argv[0], &path_var)?;
            match do_exec(&prog, &argv, &envc) {
                Ok(n) => match n {},
                Err(e) => Err(e),
            }
        })();
        let (code, msg): (u8, String) = match r {
            Ok(()) => (125, String::new()),
            Err(e) => e,
        };
        sys::write_all_fd(err_w, &[&[code], msg.as_bytes()].concat());
        // SAFETY: leave the forked child.
        unsafe { libc::_exit(code as i32) };
    }
    sys::close(err_w);
    let err = sys::read_to_end_fd(err_r);
    sys::close(err_r);
    let child = Pid::from_raw(child);
    if let Some((&code, msg)) = err.split_first() {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(LaunchError {
            code,
            msg: String::from_utf8_lossy(msg).into_owned(),
        });
    }
    let tty = pty.map(|(m, _)| {
        let raw = m.as_raw_fd();
        std::mem::forget(m);
        TtyProxy::new(raw, req.interactive)
    });
    let code = wait_loop(child, &sfd, tty);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    Ok(code)
}
