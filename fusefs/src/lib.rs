//! lxcfs-style /proc and /sys views over FUSE, computed per read from the calling process's
//! container cgroup (cgroup v1, hybrid and v2).
//!
//! - [`views`]: pure renderers, one module per file, unit tested with v1 and v2 fixtures.
//! - `resolve`: caller thread → container init (cached per pid namespace, pidfd-validated) → cgroup.
//! - `cgfiles`: cgroup files kept open per container, re-read with pread at offset 0.
//! - `engine`: gathers cgroup facts per request, falls back to the host file on failure.
//! - `fs`: the tree (direct I/O, size 0, per-handle snapshots) and its fuser (/dev/fuse) side.
//! - `uring`, `abi`: the FUSE-over-io_uring transport, one ring per CPU (Linux 6.14+).
//! - [`spawn`] mounts and serves on background threads; [`FsHandle::unmount`] ends it.

mod abi;
mod cgfiles;
mod engine;
mod fs;
mod host;
pub mod metrics;
mod resolve;
mod uring;
pub mod views;

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

pub use metrics::FsMetrics;

/// Where `cgsight fs` mounts the views unless told otherwise.
pub const DEFAULT_MOUNTPOINT: &str = "/var/lib/cgsight/fs";

/// How many CPUs a container sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuView {
    /// min(cpuset size, ceil(quota)): what the container can use at once (lxcfs --enable-cfs).
    #[default]
    Quota,
    /// The cpuset size, ignoring quotas.
    Cpuset,
}

/// Whether to serve FUSE over io_uring (per-CPU queues) besides /dev/fuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoUringMode {
    /// When the kernel has it switched on (`fuse.enable_uring`).
    #[default]
    Auto,
    /// Switch it on if the kernel has it; fail if it does not.
    On,
    /// /dev/fuse only.
    Off,
}

#[derive(Clone, Debug)]
pub struct FsConfig {
    pub mountpoint: PathBuf,
    pub cpu_view: CpuView,
    /// FUSE worker threads (each with its own cloned /dev/fuse fd), at most one per CPU (but
    /// 2): the views never block, so more workers add no parallelism, only more threads to
    /// wake across CPUs (measured on 2 vCPUs: 4 workers cost 25-40% of 2-reader throughput).
    pub threads: usize,
    pub io_uring: IoUringMode,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cgroup layout: {0}")]
    Cgroup(#[from] cgsight_cgroup::Error),
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("a cgsight fs is already serving {0}")]
    AlreadyServing(PathBuf),
    #[error("FUSE over io_uring: {0}")]
    IoUring(String),
    #[error("mounting FUSE at {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
}

/// True when `mp` is a live mount of these views: its uptime file reads.
pub fn is_serving(mp: &Path) -> bool {
    is_mountpoint(mp) && std::fs::read(mp.join("proc/uptime")).is_ok()
}

fn is_mountpoint(mp: &Path) -> bool {
    let Ok(canon) = mp.canonicalize() else {
        return false;
    };
    cgsight_cgroup::mountinfo::read_self()
        .is_ok_and(|m| cgsight_cgroup::mountinfo::is_mount_point(&m, &canon))
}

fn detach(mp: &Path) -> nix::Result<()> {
    nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH)
}

/// The errors a FUSE mount whose server died answers with: ENOTCONN over /dev/fuse,
/// ECONNABORTED over io_uring, and ECANCELED for a request that raced the kernel's
/// (asynchronous) teardown of a dead server's rings.
fn dead_server(errno: i32) -> bool {
    matches!(errno, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
}

/// Makes the mount point (and its parents) and detaches a dead FUSE mount left there by a
/// killed server (see [`dead_server`]).
fn prepare_mountpoint(mp: &Path) -> Result<(), Error> {
    for _ in 0..8 {
        match std::fs::metadata(mp) {
            Ok(m) if m.is_dir() => {
                if is_mountpoint(mp) && !is_serving(mp) {
                    // Mounted but not answering: a stale mount of ours, or something foreign.
                    if std::fs::read(mp.join("proc/uptime"))
                        .err()
                        .and_then(|e| e.raw_os_error())
                        .is_some_and(dead_server)
                    {
                        tracing::warn!(mountpoint = %mp.display(), "detaching a stale FUSE mount");
                        let _ = detach(mp);
                        continue;
                    }
                }
                return Ok(());
            }
            Ok(_) => {
                return Err(Error::Io {
                    path: mp.into(),
                    what: "mount point",
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                })
            }
            Err(e) if e.raw_os_error().is_some_and(dead_server) => {
                tracing::warn!(mountpoint = %mp.display(), "detaching a stale FUSE mount");
                if let Err(e) = detach(mp) {
                    return Err(Error::Io {
                        path: mp.into(),
                        what: "detaching a stale mount",
                        source: e.into(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(mp).map_err(|source| Error::Io {
                    path: mp.into(),
                    what: "creating the mount point",
                    source,
                })?;
            }
            Err(source) => {
                return Err(Error::Io {
                    path: mp.into(),
                    what: "mount point",
                    source,
                })
            }
        }
    }
    Ok(())
}

struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

/// A mounted, serving filesystem. Dropping it unmounts too.
pub struct FsHandle {
    mountpoint: PathBuf,
    metrics: Arc<FsMetrics>,
    unmounter: Option<SessionUnmounter>,
    uring: Option<uring::Running>,
    session: Option<JoinHandle<io::Result<()>>>,
    sampler: Option<JoinHandle<()>>,
    stop: Arc<Stop>,
    conn: u32,
}

/// Raises the soft RLIMIT_NOFILE to the hard one: the server keeps a few cgroup files open per
/// container read recently and a pidfd per recent reader thread, which a 1024 soft limit would
/// cap at a few hundred containers. (1024 is only a soft default for select() users; nothing
/// here uses select.)
fn raise_nofile_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                tracing::debug!("could not raise RLIMIT_NOFILE");
            }
        }
    }
}

/// The worker count for a requested one: capped at the CPU count, but at least 2 so a RELEASE
/// (sent asynchronously on close) does not hold up the next open.
fn worker_threads(requested: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    requested.clamp(1, cpus.max(2))
}

/// Mounts the views at `cfg.mountpoint` and serves them on background threads.
pub fn spawn(cfg: FsConfig) -> Result<FsHandle, Error> {
    let h = cgsight_cgroup::Hierarchies::detect()?;
    let mp = cfg.mountpoint.clone();
    prepare_mountpoint(&mp)?;
    if is_serving(&mp) {
        return Err(Error::AlreadyServing(mp));
    }
    raise_nofile_limit();
    let metrics = Arc::new(FsMetrics::default());
    let engine = Arc::new(engine::Engine::new(
        resolve::Resolver::new(h),
        cfg.cpu_view,
        metrics.clone(),
    ));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("cgsight".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
    ];
    config.acl = SessionACL::All;
    let threads = worker_threads(cfg.threads);
    config.n_threads = Some(threads);
    config.clone_fd = true;
    let (pending, launcher) = match uring::prepare(cfg.io_uring).map_err(Error::IoUring)? {
        Some(p) => {
            let (pending, launcher) = p.split();
            (Some(pending), Some(launcher))
        }
        None => (None, None),
    };
    let tree = Arc::new(fs::Tree::new(engine.clone()));
    let mut session =
        Session::new(fs::CgFs::new(tree.clone(), pending), &mp, &config).map_err(|source| {
            Error::Mount {
                path: mp.clone(),
                source,
            }
        })?;
    let unmounter = session.unmount_callable();
    let uring = match launcher {
        Some(l) => {
            let started = session
                .as_fd()
                .try_clone_to_owned()
                .and_then(|fd| l.launch(fd, tree, metrics.clone()));
            match started {
                Ok(r) => Some(r),
                Err(source) => {
                    let mut u = unmounter;
                    let _ = u.unmount();
                    return Err(Error::Io {
                        path: mp.clone(),
                        what: "starting the io_uring queues",
                        source,
                    });
                }
            }
        }
        None => None,
    };
    let session = std::thread::Builder::new()
        .name("cgsight-fs".into())
        .spawn(move || session.run())
        .map_err(|source| Error::Io {
            path: mp.clone(),
            what: "starting the session thread",
            source,
        })?;
    // The connection number (for an abort if the mount outlives us) is the device's minor.
    // Only now: a stat of the mount needs the session answering.
    let conn = std::fs::metadata(&mp)
        .map(|m| nix::sys::stat::minor(m.dev()) as u32)
        .unwrap_or(0);
    let stop = Arc::new(Stop {
        flag: AtomicBool::new(false),
        lock: Mutex::new(()),
        cv: Condvar::new(),
    });
    let st = stop.clone();
    let sampler = std::thread::Builder::new()
        .name("cgsight-load".into())
        .spawn(move || {
            let period = Duration::from_secs(views::loadavg::SAMPLE_SECS);
            let mut next = Instant::now() + period;
            loop {
                let mut g = st.lock.lock().unwrap_or_else(|e| e.into_inner());
                while !st.flag.load(Ordering::Relaxed) && Instant::now() < next {
                    let wait = next.saturating_duration_since(Instant::now());
                    g = st
                        .cv
                        .wait_timeout(g, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                drop(g);
                if st.flag.load(Ordering::Relaxed) {
                    return;
                }
                engine.sample_loads();
                next += period;
            }
        })
        .map_err(|source| Error::Io {
            path: mp.clone(),
            what: "starting the load sampler",
            source,
        })?;
    tracing::info!(mountpoint = %mp.display(), threads, io_uring = uring.is_some(), "serving /proc views");
    Ok(FsHandle {
        mountpoint: mp,
        metrics,
        unmounter: Some(unmounter),
        uring,
        session: Some(session),
        sampler: Some(sampler),
        stop,
        conn,
    })
}

impl FsHandle {
    pub fn metrics(&self) -> Arc<FsMetrics> {
        self.metrics.clone()
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (lazily if files are busy) and stops the threads.
    pub fn unmount(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.flag.store(true, Ordering::Relaxed);
        self.stop.cv.notify_all();
        if let Some(mut u) = self.unmounter.take() {
            if u.unmount().is_err() {
                let _ = detach(&self.mountpoint);
            }
        }
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        if let Some(u) = self.uring.take() {
            u.stop();
        }
        if let Some(s) = self.session.take() {
            // Bind mounts elsewhere keep the connection alive after the unmount; abort it so
            // the workers end (those binds then read ENOTCONN, as with any stopped server).
            let wait = |d: Duration| {
                let end = Instant::now() + d;
                while !s.is_finished() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            wait(Duration::from_millis(200));
            if !s.is_finished() {
                abort_connection(self.conn);
                wait(Duration::from_secs(2));
            }
            if s.is_finished() {
                let _ = s.join();
            } else {
                tracing::warn!("FUSE session still attached elsewhere after unmount");
            }
        }
    }
}

/// Aborts FUSE connection `conn` through fusectl, mounting fusectl first where the system has
/// not (systemd does at boot; minimal VMs and containers often do not, and without it a
/// connection held by bind mounts elsewhere outlives the server's unmount).
fn abort_connection(conn: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    let abort = dir.join(conn.to_string()).join("abort");
    if !abort.exists() && dir.is_dir() {
        let r = nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
        if let Err(e) = r {
            tracing::debug!(error = %e, "mounting fusectl");
        }
    }
    if let Err(e) = std::fs::write(&abort, "1") {
        tracing::debug!(path = %abort.display(), error = %e, "aborting the FUSE connection");
    }
}

impl Drop for FsHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
