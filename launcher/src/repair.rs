//! Repair after a total loss of the views server.
//!
//! A container's /proc views are bind mounts of the FUSE mount's files ([`PROC_VIEWS`] and
//! /sys/devices/system/cpu) made in the container's own mount namespace. Once every process
//! holding the connection's /dev/fuse descriptor is gone, those binds answer ENOTCONN for good:
//! a new server at the same mount point is a new connection the old binds know nothing of, and
//! a mount cannot be re-pointed. So a new server replaces them: it clones its own live files
//! (`open_tree`), enters each such container's mount namespace (`setns`, which a multi-threaded
//! process may not do, hence a forked child) and there detaches the dead binds and attaches the
//! clones (`move_mount`). The container recovers without a restart.
//!
//! Only containers of this store whose views came from this mount point are touched, only binds
//! that are cgsight FUSE mounts of another connection, and only where that connection is dead:
//! the binds of a hung or still-serving server are left alone. Nothing else is needed where a
//! container's mount namespace is owned by its user namespace (tried on Linux 6.18): binds made
//! inside it are not locked, and host root may detach them and attach a tree there.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgsight_cgroup::mountinfo;
use tracing::debug;

use crate::mounts::PROC_VIEWS;
use crate::state::{State, Status, Store};
use crate::views::{self, ViewsHealth};

/// How long one container's repair child may take before it is killed.
const CHILD_BOUND: Duration = Duration::from_secs(5);
/// Dead binds detached at most per target (a view bound again and again by earlier repairs
/// that died too).
const MAX_STACK: u32 = 8;

/// One container the repair acted on.
#[derive(Debug)]
pub struct Repaired {
    pub id: String,
    pub name: String,
    /// How many views were bound again, or why the container is still broken.
    pub result: Result<usize, String>,
}

#[derive(Debug, thiserror::Error)]
enum RepairError {
    #[error("{what}: {source}")]
    Sys { what: String, source: io::Error },
    #[error("the repair in the container's namespace did not finish within {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> RepairError {
    let what = what.into();
    move |source| RepairError::Sys { what, source }
}

/// A view in the container: where it is bound, and the live file to bind there.
struct Target {
    at: String,
    source: PathBuf,
}

/// Binds the live views at `mountpoint` over the dead ones of every running container of the
/// store (`Store::from_env`) whose views were served there. Containers needing nothing are
/// not listed.
pub fn repair_views(mountpoint: &Path) -> Vec<Repaired> {
    let mp = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    let live = mountinfo::read_self()
        .ok()
        .and_then(|m| mountinfo::top_mount_at(&m, &mp).map(|e| e.dev.clone()));
    let Some(live) = live else {
        debug!(mountpoint = %mp.display(), "no views mounted: nothing to repair with");
        return Vec::new();
    };
    let mut out = Vec::new();
    for st in Store::from_env().list() {
        let Some(pid) = candidate(&st, &mp) else {
            continue;
        };
        let targets = dead_targets(pid, &mp, &live);
        if targets.is_empty() {
            continue;
        }
        let health = views::health(pid);
        if health != ViewsHealth::Broken {
            debug!(container = %st.name, health = health.as_str(), "views not dead: left alone");
            continue;
        }
        out.push(Repaired {
            id: st.id.clone(),
            name: st.name.clone(),
            result: rebind(pid, &targets).map_err(|e| e.to_string()),
        });
    }
    out
}

/// The container's init pid if it is running with views served from `mp`.
fn candidate(st: &State, mp: &Path) -> Option<i32> {
    if st.status != Status::Running || st.supervisor_dead || !st.spec.proc_views {
        return None;
    }
    let from = match &st.views_mountpoint {
        Some(p) => p.clone(),
        // Launched by a binary that did not record it: the launcher's environment says.
        None => launch_env_mountpoint(st.supervisor_pid)?,
    };
    let from = std::path::absolute(&from).unwrap_or(from);
    (from == mp).then_some(st.pid?).filter(|p| *p > 0)
}

/// The views mount point the supervisor `pid` used (`views_mountpoint` in its environment).
fn launch_env_mountpoint(pid: i32) -> Option<PathBuf> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let set = env
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"CGSIGHT_FS_MOUNTPOINT=".as_slice()))
        .filter(|v| !v.is_empty());
    Some(set.map_or_else(
        || PathBuf::from(cgsight_fusefs::DEFAULT_MOUNTPOINT),
        |v| PathBuf::from(std::ffi::OsStr::from_bytes(v)),
    ))
}

/// The container's views that are cgsight FUSE binds of a connection other than the live
/// one (`live`, the mount's device number).
fn dead_targets(pid: i32, mp: &Path, live: &str) -> Vec<Target> {
    let Ok(mounts) = mountinfo::read(Path::new(&format!("/proc/{pid}/mountinfo"))) else {
        return Vec::new();
    };
    let files = PROC_VIEWS.iter().map(|f| (f, "proc"));
    let cpu = std::iter::once((&"devices/system/cpu", "sys"));
    let mut out = Vec::new();
    for (rel, top) in files.chain(cpu) {
        let at = format!("/{top}/{rel}");
        let stale = mountinfo::top_mount_at(&mounts, Path::new(&at)).is_some_and(|m| {
            m.fstype.starts_with("fuse") && m.source == "cgsight" && m.dev != live
        });
        if stale {
            out.push(Target {
                at,
                source: mp.join(top).join(rel),
            });
        }
    }
    out
}

/// A detached clone of the mount of `path` (a bind of just that file or directory).
fn open_tree_clone(path: &Path) -> Result<OwnedFd, RepairError> {
    let c = cstring(path)?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    // SAFETY: a valid C string; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(sys(format!("open_tree {}", path.display()))(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: open_tree returned a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached `tree` at `target`. Async-signal-safe (used in the forked child).
fn move_mount_to(tree: RawFd, target: &CString) -> libc::c_long {
    // SAFETY: move_mount from a tree descriptor with an empty path to a valid C string.
    unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    }
}

fn cstring(p: &Path) -> Result<CString, RepairError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| RepairError::Failed(format!("{} contains a NUL byte", p.display())))
}

// What the child reports per target: (target index, stage, errno), 12 bytes (atomic on a pipe).
const STAGE_DONE: i32 = 0;
const STAGE_ALIVE: i32 = 1;
const STAGE_SETNS: i32 = 2;
const STAGE_STATFS: i32 = 3;
const STAGE_UMOUNT: i32 = 4;
const STAGE_MOVE: i32 = 5;
const ALL: u32 = u32::MAX;

fn send(fd: RawFd, index: u32, stage: i32, errno: i32) {
    let mut m = [0u8; 12];
    m[..4].copy_from_slice(&index.to_ne_bytes());
    m[4..8].copy_from_slice(&stage.to_ne_bytes());
    m[8..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writes 12 bytes from a live stack buffer.
    unsafe { libc::write(fd, m.as_ptr().cast(), m.len()) };
}

/// Replaces the container's dead binds with clones of the live files; the count rebound.
fn rebind(pid: i32, targets: &[Target]) -> Result<usize, RepairError> {
    let trees = targets
        .iter()
        .map(|t| open_tree_clone(&t.source))
        .collect::<Result<Vec<_>, _>>()?;
    let paths = targets
        .iter()
        .map(|t| cstring(Path::new(&t.at)))
        .collect::<Result<Vec<_>, _>>()?;
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns =
        OwnedFd::from(std::fs::File::open(&ns_path).map_err(sys(format!("opening {ns_path}")))?);
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| sys("pipe2")(e.into()))?;
    let mut keep: Vec<RawFd> = trees.iter().map(AsRawFd::as_raw_fd).collect();
    keep.extend([ns.as_raw_fd(), tx.as_raw_fd()]);
    keep.sort_unstable();
    let jobs: Vec<(RawFd, &CString)> = trees.iter().map(|t| t.as_raw_fd()).zip(&paths).collect();
    // SAFETY: the child runs only async-signal-safe syscalls on memory made before the fork,
    // and never returns into Rust.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(sys("fork")(io::Error::last_os_error()));
    }
    if child == 0 {
        in_child(ns.as_raw_fd(), tx.as_raw_fd(), &jobs, &keep);
    }
    drop(tx);
    reap(child)?;
    let mut buf = [0u8; 12 * 16];
    let n = nix::unistd::read(&rx, &mut buf).unwrap_or(0);
    let mut done = 0;
    let mut errors = Vec::new();
    let mut seen = vec![false; targets.len()];
    for rec in buf[..n].chunks_exact(12) {
        let word = |i: usize| [rec[i], rec[i + 1], rec[i + 2], rec[i + 3]];
        let (index, stage, errno) = (
            u32::from_ne_bytes(word(0)),
            i32::from_ne_bytes(word(4)),
            i32::from_ne_bytes(word(8)),
        );
        let err = nix::errno::Errno::from_raw(errno);
        if index == ALL {
            return Err(RepairError::Failed(format!("setns into {ns_path}: {err}")));
        }
        let Some(t) = targets.get(index as usize) else {
            continue;
        };
        seen[index as usize] = true;
        match stage {
            STAGE_DONE => done += 1,
            STAGE_ALIVE => debug!(target = %t.at, "the bind answers: left alone"),
            STAGE_STATFS => errors.push(format!("statfs {}: {err}", t.at)),
            STAGE_UMOUNT => errors.push(format!("detaching {}: {err}", t.at)),
            _ => errors.push(format!("move_mount to {}: {err}", t.at)),
        }
    }
    for (t, _) in targets.iter().zip(&seen).filter(|(_, s)| !**s) {
        errors.push(format!("{}: no report from the repair", t.at));
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(RepairError::Failed(errors.join("; ")))
    }
}

/// The forked child: into the container's mount namespace, then per target detach the dead
/// binds and attach the clone. Only syscalls; never returns.
fn in_child(ns: RawFd, out: RawFd, jobs: &[(RawFd, &CString)], keep: &[RawFd]) -> ! {
    // SAFETY: async-signal-safe syscalls on descriptors and strings made before the fork.
    unsafe {
        // Nothing of the server's (its /dev/fuse, sockets) stays in here.
        let mut lo: u32 = 0;
        for &fd in keep {
            if fd as u32 > lo {
                libc::syscall(libc::SYS_close_range, lo, fd as u32 - 1, 0u32);
            }
            lo = fd as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32);
        let errno = || *libc::__errno_location();
        if libc::setns(ns, libc::CLONE_NEWNS) != 0 {
            send(out, ALL, STAGE_SETNS, errno());
            libc::_exit(1);
        }
        for (i, (tree, target)) in jobs.iter().enumerate() {
            let (mut stage, mut err, mut detached) = (STAGE_DONE, 0, 0);
            // A dead connection fails every request; after the last dead bind is gone the
            // statfs reaches what lies beneath (procfs, sysfs) and succeeds.
            while detached < MAX_STACK {
                let mut sfs: libc::statfs = std::mem::zeroed();
                if libc::statfs(target.as_ptr(), &mut sfs) == 0 {
                    break;
                }
                let e = errno();
                if !matches!(e, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED) {
                    (stage, err) = (STAGE_STATFS, e);
                    break;
                }
                if libc::umount2(target.as_ptr(), libc::MNT_DETACH) != 0 {
                    (stage, err) = (STAGE_UMOUNT, errno());
                    break;
                }
                detached += 1;
            }
            if stage == STAGE_DONE && detached == 0 {
                stage = STAGE_ALIVE;
            } else if stage == STAGE_DONE && move_mount_to(*tree, target) != 0 {
                (stage, err) = (STAGE_MOVE, errno());
            }
            send(out, i as u32, stage, err);
        }
        libc::_exit(0)
    }
}

/// Waits for the child within [`CHILD_BOUND`]; kills it past that.
fn reap(child: libc::pid_t) -> Result<(), RepairError> {
    let end = Instant::now() + CHILD_BOUND;
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child || r < 0 {
            return if killed {
                Err(RepairError::TimedOut(CHILD_BOUND))
            } else {
                Ok(())
            };
        }
        let now = Instant::now();
        if !killed && now >= end {
            // SAFETY: kill of our own unreaped child.
            unsafe { libc::kill(child, libc::SIGKILL) };
            killed = true;
        } else if killed && now >= end + Duration::from_secs(1) {
            // Stuck in an unkillable wait: leave it (a zombie until it ends), report.
            return Err(RepairError::TimedOut(CHILD_BOUND));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
