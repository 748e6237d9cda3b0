//! The supervisor (`cgsight launch`, foreground or detached) and the container's init.
//!
//! Order (runc's, compressed into one fork): the supervisor creates `/cgsight/<id>` and writes
//! the limits, unshares the pid and time namespaces *for its children* (writing the boottime
//! offset before any process enters the time namespace), forks the child (pid 1 of the new
//! pid namespace) which blocks on a pipe, attaches it to the cgroup, releases it. The child
//! then unshares mount/uts/ipc/net and the cgroup namespace (now rooted at its own cgroup),
//! builds its root, drops privileges and execs; exec failures come back over a CLOEXEC pipe.

use std::ffi::CString;
use std::fs;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cgsight_cgroup::{Controller, Hierarchies, Layout, Managed, Version};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::caps;
use crate::mounts::{self, CgroupView, RootPlan};
use crate::spec::{ContainerSpec, Net};
use crate::state::{now, State, StateLimits, Status, Store};
use crate::sys::{self, cstring, ChildResult};
use crate::{EXIT_LAUNCHER, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};

/// Default mountpoint of `cgsight fs`.
pub const VIEWS_MOUNTPOINT: &str = "/var/lib/cgsight/fs";

/// Where the views are served: `CGSIGHT_FS_MOUNTPOINT`, else the host-wide default. Tests point
/// it at a private `cgsight fs` so they never leave a host daemon behind.
pub fn views_mountpoint() -> PathBuf {
    std::env::var_os("CGSIGHT_FS_MOUNTPOINT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(VIEWS_MOUNTPOINT), PathBuf::from)
}

/// A launch failure with the exit code the CLI should return.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct LaunchError {
    pub code: u8,
    pub msg: String,
}

impl LaunchError {
    pub fn launcher(msg: impl std::fmt::Display) -> Self {
        LaunchError {
            code: EXIT_LAUNCHER,
            msg: msg.to_string(),
        }
    }
}

/// Is a live FUSE view mounted at `mp` (mounted as fuse and answering reads)?
pub fn views_live(mp: &Path) -> bool {
    let Ok(mi) = cgsight_cgroup::mountinfo::read_self() else {
        return false;
    };
    let mounted = cgsight_cgroup::mountinfo::top_mount_at(&mi, mp)
        .is_some_and(|e| e.fstype.starts_with("fuse"));
    mounted && read_with_timeout(&mp.join("proc/uptime"), 2000)
}

/// Reads `p` in a forked child so a hung FUSE server cannot hang the launcher (a blocked
/// FUSE read is only interruptible by a fatal signal).
fn read_with_timeout(p: &Path, ms: u64) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: the child only calls async-signal-safe functions before _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        // SAFETY: open/read/_exit in the forked child.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDONLY);
            let mut b = [0u8; 64];
            let ok = fd >= 0 && libc::read(fd, b.as_mut_ptr().cast(), b.len()) > 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let child = Pid::from_raw(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return c == 0,
            Ok(WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return false;
            }
            _ => return false,
        }
    }
}

/// Starts `cgsight fs` if no live view is mounted. Returns the mountpoint, or None with a
/// warning when the views cannot be served (the container then sees the host's files).
pub fn ensure_views(exe: &Path) -> Option<PathBuf> {
    let mp = views_mountpoint();
    if views_live(&mp) {
        return Some(mp);
    }
    let _ = fs::create_dir_all("/var/lib/cgsight");
    // The daemon outlives us: it must not hold our stdout/stderr (a caller reading our output
    // to EOF would hang), so it logs to a file.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/lib/cgsight/fs.log");
    let stderr = log.map_or_else(|_| Stdio::null(), Stdio::from);
    let status = Command::new(exe)
        .arg("fs")
        .arg("--mountpoint")
        .arg(&mp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .and_then(|mut ch| {
            // It exits once serving; do not wait forever on a daemon that never gets there.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if let Some(s) = ch.try_wait()? {
                    return Ok(s);
                }
                if std::time::Instant::now() >= deadline {
                    let _ = ch.kill();
                    let _ = ch.wait();
                    return Err(std::io::Error::other(
                        "it did not report serving within 10 s",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
    match status {
        Ok(s) if matches!(s.code(), Some(0) | Some(3)) && views_live(&mp) => Some(mp),
        Ok(s) => {
            warn!("the /proc views are off for this container: `cgsight fs` exited with {s} (see /var/lib/cgsight/fs.log); the container will see the host's /proc/meminfo, cpuinfo, ... (use --no-proc-views to silence)");
            None
        }
        Err(e) => {
            warn!("the /proc views are off for this container: cannot start `cgsight fs`: {e}");
            None
        }
    }
}

/// Everything done before the supervisor forks away (and before a detached launch returns):
/// validation against the registry, directories, the views daemon.
pub struct Prepared {
    pub spec: ContainerSpec,
    pub store: Store,
    pub hier: Hierarchies,
    pub views: Option<PathBuf>,
    pub state: State,
}

pub fn prepare(spec: ContainerSpec, store: Store, exe: &Path) -> Result<Prepared, LaunchError> {
    let hier = Hierarchies::detect().map_err(LaunchError::launcher)?;
    let me = std::process::id() as i32;
    let state = State {
        id: spec.id.clone(),
        name: spec.name.clone(),
        image: spec.image(),
        cgroup_path: spec.cgroup_path(),
        pid: None,
        status: Status::Created,
        created: now(),
        started: None,
        exit_code: None,
        oom_killed: false,
        limits: StateLimits::from_applied(&spec.limits, spec.limits.memory_swap),
        command: spec.command.clone(),
        supervisor_pid: me,
        supervisor_start: cgsight_cgroup::start_ticks(me).unwrap_or(0),
        finished: None,
        supervisor_dead: false,
        spec: spec.clone(),
    };
    store.create(&state).map_err(LaunchError::launcher)?;
    let dir = store.container_dir(&spec.id);
    let mk = ["upper", "work", "merged"]
        .iter()
        .try_for_each(|d| fs::create_dir_all(dir.join(d)));
    if let Err(e) = mk {
        let _ = fs::remove_dir_all(&dir);
        let _ = store.remove_state(&spec.id);
        return Err(LaunchError::launcher(format!(
            "creating {}: {e}",
            dir.display()
        )));
    }
    let views = if spec.proc_views {
        ensure_views(exe)
    } else {
        None
    };
    Ok(Prepared {
        spec,
        store,
        hier,
        views,
        state,
    })
}

/// Removes what a container left: its cgroup (killing anything in it), and unless `keep`,
/// its layers and state. Runs on every supervisor exit path.
struct Cleanup {
    store: Store,
    id: String,
    managed: Option<Managed>,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(m) = self.managed.take() {
            if let Err(e) = m.kill_and_remove() {
                warn!("removing cgroup of {}: {e}", self.id);
            }
        }
        if !self.keep {
            let d = self.store.container_dir(&self.id);
            if let Err(e) = fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!("removing {}: {e}", d.display());
                }
            }
            let _ = self.store.remove_state(&self.id);
        }
    }
}

fn swap_accounting(m: &Managed) -> bool {
    m.cgroup()
        .dir(Controller::Memory)
        .is_some_and(|d| match d.version {
            Version::V1 => d.dir.join("memory.memsw.limit_in_bytes").exists(),
            Version::V2 => d.dir.join("memory.swap.max").exists(),
        })
}

fn cgroup_view(h: &Hierarchies, m: &Managed) -> CgroupView {
    if h.layout == Layout::Unified {
        return CgroupView::Cgroup2;
    }
    let mut binds: Vec<(String, PathBuf)> = Vec::new();
    for d in m.cgroup().dirs.values() {
        if binds.iter().any(|(_, p)| *p == d.dir) {
            continue;
        }
        let name = d
            .mount_point
            .file_name()
            .map_or_else(|| "unified".into(), |n| n.to_string_lossy().into_owned());
        binds.push((name, d.dir.clone()));
    }
    if let (Some(u), Some(mp)) = (&m.cgroup().unified, h.unified()) {
        if !binds.iter().any(|(_, p)| p == u) {
            let name = mp
                .mount_point
                .file_name()
                .map_or_else(|| "unified".into(), |n| n.to_string_lossy().into_owned());
            binds.push((name, u.clone()));
        }
    }
    CgroupView::Binds(binds)
}

/// Writes the boottime offset so the container's uptime starts at ~0. Must run after
/// unshare(CLONE_NEWTIME) and before any process enters the namespace.
fn time_namespace() {
    // SAFETY: unshare with a flag constant.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        warn!(
            "no time namespace (kernel < 5.6?): the container's uptime will be the host's: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let (s, ns) = if ts.tv_nsec > 0 {
        (-ts.tv_sec - 1, 1_000_000_000 - ts.tv_nsec)
    } else {
        (-ts.tv_sec, 0)
    };
    if let Err(e) = fs::write("/proc/self/timens_offsets", format!("boottime {s} {ns}\n")) {
        warn!("cannot set the container's boottime offset: {e}");
    }
}

/// What the child needs (prepared before fork so the child only does syscalls and I/O).
struct ChildPlan {
    root: RootPlan,
    hostname: String,
    net_none: bool,
    tty: bool,
    interactive: bool,
    init: bool,
    workdir: PathBuf,
    env: Vec<CString>,
    path_var: String,
    argv: Vec<CString>,
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

fn child_plan(spec: &ContainerSpec, p: &Prepared, m: &Managed) -> Result<ChildPlan, LaunchError> {
    let dir = p.store.container_dir(&spec.id);
    let (env, path_var) = container_env(&spec.hostname, spec.tty, &spec.env);
    let env = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LaunchError::launcher)?;
    let argv = spec
        .command
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LaunchError::launcher)?;
    Ok(ChildPlan {
        root: RootPlan {
            lower: spec.rootfs.clone().unwrap_or_else(|| PathBuf::from("/")),
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            volumes: spec.volumes.clone(),
            views: p.views.clone(),
            cgroup: cgroup_view(&p.hier, m),
        },
        hostname: spec.hostname.clone(),
        net_none: spec.net == Net::None,
        tty: spec.tty,
        interactive: spec.interactive,
        init: spec.init,
        workdir: spec.workdir.clone().unwrap_or_else(|| PathBuf::from("/")),
        env,
        path_var,
        argv,
    })
}

/// Runs the container to completion. `started` is called once the command runs (or with the
/// error that stopped it), before waiting: a detached launch reports back through it.
pub fn supervise(
    p: Prepared,
    started: &mut dyn FnMut(Result<&State, &LaunchError>),
) -> Result<u8, LaunchError> {
    let r = supervise_inner(p, started);
    if let Err(e) = &r {
        started(Err(e));
    }
    r
}

fn supervise_inner(
    p: Prepared,
    started: &mut dyn FnMut(Result<&State, &LaunchError>),
) -> Result<u8, LaunchError> {
    let spec = p.spec.clone();
    let mut state = p.state.clone();
    let me = std::process::id() as i32;
    state.supervisor_pid = me;
    state.supervisor_start = cgsight_cgroup::start_ticks(me).unwrap_or(0);
    let mut cleanup = Cleanup {
        store: p.store.clone(),
        id: spec.id.clone(),
        managed: None,
        keep: false,
    };
    let managed = Managed::create(
        &p.hier,
        &spec.cgroup_path(),
        &cgsight_cgroup::Resources::default().controllers(),
    )
    .map_err(|e| LaunchError::launcher(format!("creating cgroup: {e}")))?;
    cleanup.managed = Some(managed.clone());
    let res = spec.resources(swap_accounting(&managed));
    managed
        .apply(&res)
        .map_err(|e| LaunchError::launcher(format!("setting limits: {e}")))?;
    state.limits = StateLimits::from_applied(&spec.limits, res.memory_swap);
    let plan = child_plan(&spec, &p, &managed)?;

    // All signals go through a signalfd from here on (the child restores its mask).
    let all = SigSet::all();
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old))
        .map_err(|e| LaunchError::launcher(format!("sigprocmask: {e}")))?;
    let sfd = SignalFd::with_flags(&all, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| LaunchError::launcher(format!("signalfd: {e}")))?;

    time_namespace();
    // SAFETY: unshare with a flag constant; affects only children forked later.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(LaunchError::launcher(format!(
            "unshare(CLONE_NEWPID): {}",
            std::io::Error::last_os_error()
        )));
    }
    let io = |what: &str, e: std::io::Error| LaunchError::launcher(format!("{what}: {e}"));
    let (go_r, go_w) = sys::pipe_cloexec().map_err(|e| io("pipe", e))?;
    let (err_r, err_w) = sys::pipe_cloexec().map_err(|e| io("pipe", e))?;
    let mut sock = [-1i32; 2];
    if plan.tty {
        // SAFETY: valid 2-element array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sock.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io("socketpair", std::io::Error::last_os_error()));
        }
    }

    // SAFETY: the supervisor is single-threaded here; the child only runs our own code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        sys::close(go_w);
        sys::close(err_r);
        sys::close(sock[0]);
        let code = match container_child(&plan, go_r, err_w, sock[1]) {
            Ok(never) => match never {},
            Err((code, msg)) => {
                sys::write_all_fd(err_w, &[&[code], msg.as_bytes()].concat());
                code
            }
        };
        // SAFETY: leave the forked child without running the parent's destructors.
        unsafe { libc::_exit(code as i32) };
    }
    sys::close(go_r);
    sys::close(err_w);
    sys::close(sock[1]);
    let child = Pid::from_raw(pid);
    debug!("container child {pid}");

    let fail = |e: LaunchError| {
        sys::close(go_w);
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        e
    };
    if let Err(e) = managed.attach(pid) {
        return Err(fail(LaunchError::launcher(format!("joining cgroup: {e}"))));
    }
    sys::write_all_fd(go_w, b"g");
    sys::close(go_w);

    let master = if plan.tty {
        let m = recv_fd(sock[0]);
        sys::close(sock[0]);
        m
    } else {
        None
    };
    let err = sys::read_to_end_fd(err_r);
    sys::close(err_r);
    if let Some((&code, msg)) = err.split_first() {
        let _ = waitpid(child, None);
        if let Some(m) = master {
            sys::close(m);
        }
        return Err(LaunchError {
            code,
            msg: String::from_utf8_lossy(msg).into_owned(),
        });
    }
    if plan.tty && master.is_none() {
        return Err(fail(LaunchError::launcher(
            "the container's pty was not received",
        )));
    }
    state.pid = Some(pid);
    state.status = Status::Running;
    state.started = Some(now());
    if let Err(e) = p.store.write(&state) {
        warn!("writing state: {e}");
    }
    started(Ok(&state));

    let tty = master.map(|m| TtyProxy::new(m, plan.interactive));
    let code = wait_loop(child, &sfd, tty);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);

    state.oom_killed = managed.cgroup().oom().is_ok_and(|o| o.oom_kill > 0);
    state.exit_code = Some(code as i32);
    state.status = Status::Exited;
    state.finished = Some(now());
    if !spec.rm {
        cleanup.keep = true;
        if let Err(e) = p.store.write(&state) {
            warn!("writing state: {e}");
        }
    }
    drop(cleanup);
    Ok(code)
}

fn recv_fd(sock: RawFd) -> Option<RawFd> {
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            return fds.first().copied();
        }
    }
    None
}

fn send_fd(sock: RawFd, fd: RawFd) -> ChildResult<()> {
    let fds = [fd];
    let iov = [IoSlice::new(b"t")];
    nix::sys::socket::sendmsg::<()>(
        sock,
        &iov,
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("sending the pty: {e}"))
}

type ChildErr = (u8, String);
fn lerr(msg: String) -> ChildErr {
    (EXIT_LAUNCHER, msg)
}

pub(crate) enum Never {}

/// The container's pid 1 before exec.
fn container_child(
    plan: &ChildPlan,
    go_r: RawFd,
    err_w: RawFd,
    sock: RawFd,
) -> Result<Never, ChildErr> {
    // If the supervisor dies, so does the container: nobody would report its exit otherwise.
    // (getppid() is 0 here: the parent is outside our pid namespace. A supervisor that died
    // before this prctl closes the go pipe, which the read below notices.)
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    if unsafe { libc::read(go_r, b.as_mut_ptr().cast(), 1) } != 1 {
        return Err(lerr("the supervisor did not release the container".into()));
    }
    sys::close(go_r);
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP;
    if plan.net_none {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare with flag constants. The cgroup ns is made now that we are in our
    // cgroup, so that cgroup is its root.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(lerr(format!(
            "unshare: {}",
            std::io::Error::last_os_error()
        )));
    }
    let last = caps::last_cap();
    mounts::build_root(&plan.root).map_err(lerr)?;
    nix::unistd::sethostname(&plan.hostname).map_err(|e| lerr(format!("sethostname: {e}")))?;
    if plan.net_none {
        mounts::loopback_up().map_err(lerr)?;
    }
    if plan.tty {
        let slave = open_pty(sock).map_err(lerr)?;
        setup_tty_stdio(slave).map_err(lerr)?;
    } else if !plan.interactive {
        devnull_stdin().map_err(lerr)?;
    }
    if sock >= 0 {
        sys::close(sock);
    }
    if !plan.workdir.is_dir() {
        let _ = fs::create_dir_all(&plan.workdir);
    }
    nix::unistd::chdir(&plan.workdir)
        .map_err(|e| lerr(format!("chdir {}: {e}", plan.workdir.display())))?;
    caps::restrict(last).map_err(lerr)?;
    let prog = resolve(&plan.argv[0], &plan.path_var)?;
    if plan.init {
        run_init(plan, &prog, err_w)
    } else {
        exec(&prog, &plan.argv, &plan.env)
    }
}

fn devnull_stdin() -> ChildResult<()> {
    let fd = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open /dev/null: {e}"))?;
    // SAFETY: dup2 onto stdin.
    unsafe { libc::dup2(fd.as_raw_fd(), 0) };
    Ok(())
}

/// Opens a pty in the container's own devpts, sends the master to the supervisor.
fn open_pty(sock: RawFd) -> ChildResult<RawFd> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("opening /dev/ptmx: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opening {name}: {e}"))?;
    send_fd(sock, master.as_raw_fd())?;
    drop(master);
    let raw = slave.as_raw_fd();
    std::mem::forget(slave);
    Ok(raw)
}

fn setup_tty_stdio(slave: RawFd) -> ChildResult<()> {
    // SAFETY: session/ctty/dup2 syscalls on an fd we own.
    unsafe {
        if libc::setsid() < 0 {
            return Err(format!("setsid: {}", std::io::Error::last_os_error()));
        }
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(format!("TIOCSCTTY: {}", std::io::Error::last_os_error()));
        }
        for fd in 0..3 {
            libc::dup2(slave, fd);
        }
        if slave > 2 {
            libc::close(slave);
        }
    }
    Ok(())
}

/// PATH search inside the container (execvpe would search the launcher's PATH).
pub(crate) fn resolve(arg0: &CString, path: &str) -> Result<CString, ChildErr> {
    let name = arg0.as_bytes();
    let shown = String::from_utf8_lossy(name).into_owned();
    if name.contains(&b'/') {
        return Ok(arg0.clone());
    }
    let mut found_noexec = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(std::ffi::OsStr::from_bytes(name));
        if let Ok(md) = fs::metadata(&cand) {
            if md.is_file() {
                let c =
                    CString::new(cand.as_os_str().as_bytes()).map_err(|_| lerr("NUL".into()))?;
                // SAFETY: access(2) on a valid C string.
                if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
                    return Ok(c);
                }
                found_noexec.get_or_insert(c);
            }
        }
    }
    match found_noexec {
        Some(c) => Ok(c),
        None => Err((
            EXIT_NOT_FOUND,
            format!("{shown:?}: executable file not found in $PATH"),
        )),
    }
}

fn reset_signals() {
    // SAFETY: restoring default dispositions and an empty mask before exec; Rust's runtime
    // ignores SIGPIPE, which the command must not inherit.
    unsafe {
        for s in 1..32 {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

pub(crate) fn exec(prog: &CString, argv: &[CString], env: &[CString]) -> Result<Never, ChildErr> {
    reset_signals();
    let e = nix::unistd::execve(prog, argv, env).unwrap_err();
    let shown = prog.to_string_lossy();
    Err(match e {
        nix::errno::Errno::ENOENT => (
            EXIT_NOT_FOUND,
            format!("{shown}: no such file or directory"),
        ),
        e => (EXIT_NOT_EXECUTABLE, format!("{shown}: cannot execute: {e}")),
    })
}

/// `--init`: pid 1 stays ours, forks the command, forwards signals to it and reaps every
/// orphan; exits with the command's status.
fn run_init(plan: &ChildPlan, prog: &CString, err_w: RawFd) -> Result<Never, ChildErr> {
    let all = SigSet::all();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None);
    let sfd = SignalFd::with_flags(&all, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| lerr(format!("signalfd: {e}")))?;
    // SAFETY: single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(lerr(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        let (code, msg) = match exec(prog, &plan.argv, &plan.env) {
            Ok(n) => match n {},
            Err(e) => e,
        };
        sys::write_all_fd(err_w, &[&[code], msg.as_bytes()].concat());
        // SAFETY: exit the forked child.
        unsafe { libc::_exit(code as i32) };
    }
    sys::close(err_w);
    let code = wait_loop(Pid::from_raw(pid), &sfd, None);
    // SAFETY: exit pid 1 with the command's status.
    unsafe { libc::_exit(code as i32) };
}

/// Copies between the host terminal and the container's pty.
pub struct TtyProxy {
    master: RawFd,
    forward_stdin: bool,
    saved: Option<nix::sys::termios::Termios>,
    /// The last byte forwarded was not a newline (a pending partial line).
    line_open: std::cell::Cell<bool>,
}

impl TtyProxy {
    pub fn new(master: RawFd, forward_stdin: bool) -> Self {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        let p = TtyProxy {
            master,
            forward_stdin,
            saved,
            line_open: std::cell::Cell::new(false),
        };
        p.resize();
        p
    }
    /// Copies our terminal's size (stdin's, else stdout's) to the container's pty.
    fn resize(&self) {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0
                || libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0
            {
                libc::ioctl(self.master, libc::TIOCSWINSZ, &ws);
            }
        }
    }

    /// Our stdin ended (e.g. `-t -i` fed from a pipe): type the pty's EOF character so the
    /// command sees end of input instead of waiting forever, as `script` does. A pending
    /// partial line takes one EOF to flush and a second to read as end of input.
    fn send_eof(&self) {
        // SAFETY: the master stays open for the lifetime of self.
        let master = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.master) };
        let Ok(t) = nix::sys::termios::tcgetattr(master) else {
            return;
        };
        if !t
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ICANON)
        {
            return;
        }
        let eof = t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize];
        let n = if self.line_open.get() { 2 } else { 1 };
        for _ in 0..n {
            sys::write_all_fd(self.master, &[eof]);
        }
    }
}

impl Drop for TtyProxy {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
        sys::close(self.master);
    }
}

fn status_code(s: WaitStatus) -> Option<u8> {
    match s {
        WaitStatus::Exited(_, c) => Some(c as u8),
        WaitStatus::Signaled(_, sig, _) => Some(128u8.wrapping_add(sig as u8)),
        _ => None,
    }
}

/// Waits for `child`, forwarding every signal but SIGCHLD/SIGWINCH to it, reaping any other
/// child, and proxying the pty. Returns the exit code (128+N on signal N).
pub fn wait_loop(child: Pid, sfd: &SignalFd, tty: Option<TtyProxy>) -> u8 {
    let mut code: Option<u8> = None;
    let mut stdin_open = tty.as_ref().is_some_and(|t| t.forward_stdin);
    let mut master_open = tty.is_some();
    let mut buf = [0u8; 8192];
    loop {
        if code.is_some() && !master_open {
            break;
        }
        let mut fds = vec![libc::pollfd {
            fd: sfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(t) = &tty {
            fds.push(libc::pollfd {
                fd: if master_open { t.master } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // After the command exits, drain the pty briefly (a grandchild may hold the slave).
        let timeout = if code.is_some() { 200 } else { -1 };
        // SAFETY: valid pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue;
        }
        if n == 0 && code.is_some() {
            break;
        }
        if fds[0].revents != 0 {
            while let Ok(Some(si)) = sfd.read_signal() {
                let signo = si.ssi_signo as i32;
                match signo {
                    libc::SIGCHLD => loop {
                        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(s) => {
                                if s.pid() == Some(child) {
                                    if let Some(c) = status_code(s) {
                                        code = Some(c);
                                    }
                                }
                            }
                        }
                    },
                    libc::SIGWINCH => {
                        if let Some(t) = &tty {
                            t.resize();
                        }
                    }
                    s => {
                        // SAFETY: kill with a pid and signal number.
                        unsafe { libc::kill(child.as_raw(), s) };
                    }
                }
            }
        }
        if let Some(t) = &tty {
            if fds[1].revents != 0 {
                // SAFETY: reading into a valid buffer.
                let r = unsafe { libc::read(t.master, buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    master_open = false;
                } else {
                    sys::write_all_fd(1, &buf[..r as usize]);
                }
            }
            if fds[2].revents != 0 {
                // SAFETY: reading into a valid buffer.
                let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    stdin_open = false;
                    t.send_eof();
                } else {
                    sys::write_all_fd(t.master, &buf[..r as usize]);
                    t.line_open.set(buf[r as usize - 1] != b'\n');
                }
            }
        }
    }
    drop(tty);
    code.unwrap_or(EXIT_LAUNCHER)
}
