//! The supervisor (`cgsight launch`, foreground or detached).
//!
//! Order (runc's, compressed into one fork): the supervisor creates `/cgsight/<id>` and writes
//! the limits, unshares the pid and time namespaces *for its children* (writing the boottime
//! offset before any process enters the time namespace), forks the child (pid 1 of the new
//! pid namespace) which blocks on a pipe, attaches it to the cgroup, releases it. The child
//! then unshares mount/uts/ipc/net and the cgroup namespace (now rooted at its own cgroup),
//! builds its root, drops privileges and execs; exec failures come back over a CLOEXEC pipe.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use cgsight_cgroup::{devices, Controller, Hierarchies, Layout, Managed, Version};
use cgsight_seccomp::Program;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use tracing::{debug, warn};

use crate::child::{self, container_env, ChildFds, ChildNet, ChildPlan};
use crate::mounts::{CgroupView, Idmap, RootPlan, HOST_STATE_DIRS};
use crate::network::{self, Plumbed};
use crate::security::Userns;
use crate::spec::{ContainerSpec, Net};
use crate::state::{now, State, StateLimits, Status, Store};
use crate::sys::{self, recv_fd};
use crate::tty::TtyProxy;
use crate::views::ensure_views;
use crate::wait::wait_loop;
use crate::LaunchError;
use crate::{children_ns, security, userns};

/// Everything done before the supervisor forks away (and before a detached launch returns):
/// validation against the registry, directories, the views daemon.
pub struct Prepared {
    pub spec: ContainerSpec,
    pub store: Store,
    pub hier: Hierarchies,
    pub views: Option<PathBuf>,
    pub state: State,
    /// The caller's descriptors passed to the command (`--preserve-fds`).
    pub preserved_fds: Vec<i32>,
    /// The compiled seccomp filter (`None`: unconfined).
    pub seccomp: Option<Program>,
    /// Whether the filter came from the compiled-program cache.
    pub seccomp_cache_hit: bool,
    /// The filter hands sysinfo(2) to us (see `crate::sysinfo`).
    pub sysinfo_notify: bool,
}

pub fn prepare(spec: ContainerSpec, store: Store, exe: &Path) -> Result<Prepared, LaunchError> {
    // First, before we open descriptors of our own.
    let preserved_fds = sys::preserved_fds(spec.preserve_fds);
    // The views' liveness probe reads through the mount in a forked reader: started now, it
    // runs while the filter, the state and the directories are made, and is collected below.
    let views_probe = spec
        .proc_views
        .then(|| cgsight_fusefs::start_serving_probe(&crate::views::views_mountpoint()));
    let hier = Hierarchies::detect().map_err(LaunchError::cgroup("cgroup layout"))?;
    // Before anything is created: a profile that does not compile leaves nothing behind.
    let t = std::time::Instant::now();
    let filter = security::seccomp_program(&spec.security, spec.security.caps(), spec.proc_views)?;
    let (seccomp, seccomp_cache_hit, sysinfo_notify) = match filter {
        Some(f) => (Some(f.program), f.cache_hit, f.sysinfo_notify),
        None => (None, false, false),
    };
    debug!(
        us = t.elapsed().as_micros() as u64,
        cache_hit = seccomp_cache_hit,
        "seccomp filter ready"
    );
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
        network: None,
        views_mountpoint: None,
        spec: spec.clone(),
    };
    store.create(&state)?;
    let dir = store.container_dir(&spec.id);
    let mk = ["upper", "work", "merged"]
        .iter()
        .try_for_each(|d| fs::create_dir_all(dir.join(d)));
    if let Err(e) = mk {
        let _ = fs::remove_dir_all(&dir);
        let _ = store.remove_state(&spec.id);
        return Err(LaunchError::io(format!("creating {}", dir.display()))(e));
    }
    let views = views_probe.and_then(|p| ensure_views(exe, p));
    if spec.views_required && views.is_none() {
        let _ = fs::remove_dir_all(&dir);
        let _ = store.remove_state(&spec.id);
        return Err(LaunchError::ViewsRequired);
    }
    Ok(Prepared {
        spec,
        store,
        hier,
        views,
        state,
        preserved_fds,
        seccomp,
        seccomp_cache_hit,
        sysinfo_notify,
    })
}

/// Removes what a container left: its cgroup (killing anything in it), and unless `keep`,
/// its layers and state. Runs on every supervisor exit path.
struct Cleanup {
    store: Store,
    id: String,
    managed: Option<Managed>,
    keep: bool,
    /// `--userns auto`: the id range to return with the layers.
    userns: bool,
    /// A bridge lease (address, veth, `-p` rules): released on exit, kept container or not,
    /// as docker frees a stopped container's address.
    network: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(m) = self.managed.take() {
            if let Err(e) = m.kill_and_remove() {
                warn!("removing cgroup of {}: {e}", self.id);
            }
        }
        if self.network {
            let t = std::time::Instant::now();
            if let Err(e) = network::release_on_exit(&self.store, &self.id) {
                warn!("releasing the network of {}: {e}", self.id);
            }
            debug!(us = t.elapsed().as_micros() as u64, "network released");
        }
        if !self.keep {
            let d = self.store.container_dir(&self.id);
            if let Err(e) = fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!("removing {}: {e}", d.display());
                }
            }
            let _ = self.store.remove_state(&self.id);
            if self.userns {
                if let Err(e) = userns::setup::free(&self.id) {
                    warn!("freeing the id range of {}: {e}", self.id);
                }
            }
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
    let name_of = |mp: &Path| {
        mp.file_name()
            .map_or_else(|| "unified".into(), |n| n.to_string_lossy().into_owned())
    };
    let mut binds: Vec<(String, PathBuf)> = Vec::new();
    for d in m.cgroup().dirs.values() {
        if !binds.iter().any(|(_, p)| *p == d.dir) {
            binds.push((name_of(&d.mount_point), d.dir.clone()));
        }
    }
    if let (Some(u), Some(mp)) = (&m.cgroup().unified, h.unified()) {
        if !binds.iter().any(|(_, p)| p == u) {
            binds.push((name_of(&mp.mount_point), u.clone()));
        }
    }
    CgroupView::Binds(binds)
}

/// With the host's / as the lower layer, the container would see every other container's
/// layers and state, and other runtimes' too: those directories are covered (our store's,
/// wherever CGSIGHT_STATE_DIR / CGSIGHT_ROOT_DIR put it, included).
fn hidden_dirs(spec: &ContainerSpec, store: &Store) -> Vec<PathBuf> {
    if spec.rootfs.is_some() || spec.image_ref.is_some() {
        return Vec::new();
    }
    let mut dirs: Vec<PathBuf> = HOST_STATE_DIRS.iter().map(PathBuf::from).collect();
    for d in [&store.state_dir, &store.root_dir] {
        if !dirs.iter().any(|h| d.starts_with(h)) {
            dirs.push(d.clone());
        }
    }
    dirs
}

fn child_plan(
    spec: &ContainerSpec,
    p: &Prepared,
    m: &Managed,
    uns: Option<&userns::setup::Prepared>,
    net: &Plumbed,
) -> Result<ChildPlan, LaunchError> {
    let dir = p.store.container_dir(&spec.id);
    let mut lower = spec.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
    let mut image_lowers = spec
        .image_ref
        .as_ref()
        .map_or_else(Vec::new, |i| i.lowers.clone());
    let mut idmap = None;
    if let Some(fd) = uns.and_then(|u| u.userns_fd.as_ref()) {
        // The root's directories, idmapped so their root-owned files are container root's.
        let mut trees = Vec::new();
        if let Some(rootfs) = &spec.rootfs {
            lower = dir.join("lower");
            mkdir(&lower)?;
            trees.push((rootfs.clone(), lower.clone()));
        }
        for (i, layer) in image_lowers.iter_mut().enumerate() {
            // Relative to `dir` (the overlay is mounted from there): "m/0:m/1:...".
            let at = PathBuf::from(format!("m/{i}"));
            mkdir(&dir.join(&at))?;
            trees.push((std::mem::replace(layer, at.clone()), at));
        }
        idmap = Some(Idmap {
            userns: fd.as_raw_fd(),
            trees,
            base: dir.clone(),
        });
    }
    let (env, path_var) = container_env(&spec.hostname, spec.tty, &spec.env);
    Ok(ChildPlan {
        root: RootPlan {
            lower,
            image_lowers,
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            // The network's /etc files first: a user's `-v …:/etc/hosts` goes over them.
            volumes: net.files.iter().chain(&spec.volumes).cloned().collect(),
            views: p.views.clone(),
            cgroup: cgroup_view(&p.hier, m),
            hide: hidden_dirs(spec, &p.store),
            devices: spec.security.devices.clone(),
            privileged: spec.security.privileged,
            ids: uns.map(|u| u.range),
            idmap,
        },
        hostname: spec.hostname.clone(),
        net: match (&spec.net, &net.netns) {
            (Net::Host, _) => ChildNet::Host,
            (_, Some(fd)) => ChildNet::Join {
                fd: fd.as_raw_fd(),
                own: spec.net == Net::Bridge,
            },
            _ => ChildNet::Empty,
        },
        tty: spec.tty,
        interactive: spec.interactive,
        init: spec.init,
        workdir: spec.workdir.clone().unwrap_or_else(|| PathBuf::from("/")),
        env: sys::cstrings(env.iter().map(|(k, v)| format!("{k}={v}")))?,
        path_var,
        argv: sys::cstrings(&spec.command)?,
        preserve_fds: p.preserved_fds.clone(),
        seccomp: p.seccomp.clone(),
        sysinfo_notify: p.sysinfo_notify,
        userns: uns.map(|u| u.range),
        user: spec.user.clone(),
        caps: spec.security.caps(),
        home_given: spec.env.iter().any(|(k, _)| k == "HOME"),
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
    // A detached launch runs this in a forked process: the supervisor is whoever runs it.
    let me = std::process::id() as i32;
    state.supervisor_pid = me;
    state.supervisor_start = cgsight_cgroup::start_ticks(me).unwrap_or(0);
    let mut cleanup = Cleanup {
        store: p.store.clone(),
        id: spec.id.clone(),
        managed: None,
        keep: false,
        userns: false,
        network: false,
    };
    let managed = Managed::create(
        &p.hier,
        &spec.cgroup_path(),
        &cgsight_cgroup::Resources::default().controllers(),
    )
    .map_err(LaunchError::cgroup("creating cgroup"))?;
    cleanup.managed = Some(managed.clone());
    let res = spec.resources(swap_accounting(&managed));
    managed
        .apply(&res)
        .map_err(LaunchError::cgroup("setting limits"))?;
    state.limits = StateLimits::from_applied(&spec.limits, res.memory_swap);
    let uns = if spec.security.userns == Userns::Auto {
        cleanup.userns = true;
        let dir = p.store.container_dir(&spec.id);
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        Some(userns::setup::prepare(
            &spec.id,
            &[&upper, &work],
            spec.rootfs.is_some() || spec.image_ref.is_some(),
        )?)
    } else {
        None
    };
    let t = std::time::Instant::now();
    let net = network::plumb(&spec, &p.store)?;
    cleanup.network = net.attached;
    // For bench/launch-bench.sh: what the network mode costs on the launch path.
    debug!(us = t.elapsed().as_micros() as u64, "network ready");
    state.network = Some(net.info.clone());
    let plan = child_plan(&spec, &p, &managed, uns.as_ref(), &net)?;
    // The idmap namespace stays open here until the child has exec'd (it mounts with it).
    let (range, _userns_fd, handshake) = match uns {
        Some(u) => (Some(u.range), u.userns_fd, Some(u.handshake)),
        None => (None, None, None),
    };

    // All signals go through a signalfd from here on (the child restores its mask).
    let signals = sys::block_all_signals().map_err(LaunchError::sys("blocking signals"))?;
    // Dropped before `cleanup` runs: gives later children our own namespaces back.
    let host_ns = children_ns::HostNs::keep();
    children_ns::time_namespace();
    // Affects only the children forked from now on.
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)
        .map_err(LaunchError::sys("unshare(CLONE_NEWPID)"))?;
    let (go_r, go_w) = sys::pipe_cloexec()?;
    let (err_r, err_w) = sys::pipe_cloexec()?;
    let (sock_parent, sock_child) = fd_channel(plan.tty)?;
    let (listener_parent, listener_child) = fd_channel(plan.sysinfo_notify)?;

    // SAFETY: the supervisor is single-threaded here; the child only runs our own code.
    let child = match unsafe { nix::unistd::fork() }.map_err(LaunchError::sys("fork"))? {
        ForkResult::Child => {
            drop((go_w, err_r, sock_parent, listener_parent));
            child::run(
                &plan,
                ChildFds {
                    go: Some(go_r),
                    err: Some(err_w),
                    sock: sock_child,
                    userns: handshake.map(|h| h.child()),
                    listener: listener_child,
                },
            )
        }
        ForkResult::Parent { child } => child,
    };
    let userns_parent = handshake.map(|h| h.parent());
    drop((go_r, err_w, sock_child, listener_child));
    debug!("container child {child}");

    let kill_child = |e: LaunchError| {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        e
    };
    if let Err(e) = managed.attach(child.as_raw()) {
        drop(go_w);
        return Err(kill_child(LaunchError::cgroup("joining cgroup")(e)));
    }
    // Before the child is released: it must not open a device the rules deny, ever.
    let t = std::time::Instant::now();
    let rules = security::device_rules(&spec.security);
    if let Err(e) = devices::apply(&p.hier, managed.cgroup(), &rules) {
        drop(go_w);
        return Err(kill_child(LaunchError::Devices(format!(
            "applying the device rules: {e}"
        ))));
    }
    // For bench/launch-bench.sh: what containment costs on the launch path.
    debug!(us = t.elapsed().as_micros() as u64, "device rules applied");
    sys::write_all_fd(&go_w, b"g");
    drop(go_w);

    let master = sock_parent.and_then(|s| recv_fd(s.as_raw_fd()));
    if let (Some(side), Some(range)) = (userns_parent, &range) {
        if let Err(e) = side.map(child.as_raw(), range) {
            // A child that failed before its user namespace says why on the error pipe.
            let err = sys::read_to_end_fd(&err_r);
            if let Some(ce) = LaunchError::from_child_report(&err) {
                let _ = waitpid(child, None);
                return Err(ce);
            }
            return Err(kill_child(e.into()));
        }
    }
    let err = sys::read_to_end_fd(&err_r);
    drop(err_r);
    if let Some(e) = LaunchError::from_child_report(&err) {
        let _ = waitpid(child, None);
        return Err(e);
    }
    if plan.tty && master.is_none() {
        return Err(kill_child(LaunchError::NoPty));
    }
    // Sent right before exec, so queued by now (None: the child never got that far).
    let mut sysinfo = listener_parent
        .and_then(|s| recv_fd(s.as_raw_fd()))
        .and_then(|l| {
            let cg = managed.cgroup().clone();
            crate::sysinfo::Server::new(l, p.hier.clone(), cg, child.as_raw())
        });
    // pid 1 holds its namespace now.
    drop(net);
    state.pid = Some(child.as_raw());
    state.status = Status::Running;
    state.started = Some(now());
    // Bound in the container by now, when in use (a new server there repairs them: repair.rs).
    state.views_mountpoint = p.views.clone();
    if let Err(e) = p.store.write(&state) {
        warn!("writing state: {e}");
    }
    started(Ok(&state));

    let tty = master.map(|m| TtyProxy::new(m, plan.interactive));
    let code = wait_loop(child, &signals.fd, tty, sysinfo.as_mut());
    drop(signals);
    // Before the cgroup goes: the server holds its files open.
    drop(sysinfo);

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
    drop(host_ns);
    drop(cleanup);
    Ok(code)
}

/// A socketpair to pass a descriptor from the child (pty master, seccomp listener), if `want`.
fn fd_channel(want: bool) -> Result<(Option<OwnedFd>, Option<OwnedFd>), LaunchError> {
    if !want {
        return Ok((None, None));
    }
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(LaunchError::sys("socketpair"))?;
    Ok((Some(a), Some(b)))
}

fn mkdir(d: &Path) -> Result<(), LaunchError> {
    fs::create_dir_all(d).map_err(LaunchError::io(format!("creating {}", d.display())))
}
