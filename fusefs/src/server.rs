//! Mounting and serving: [`spawn`] starts the session, the io_uring queues and the load
//! sampler; [`FsHandle`] stops them and unmounts.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

use crate::config::FsConfig;
use crate::error::Error;
use crate::metrics::FsMetrics;
use crate::mount::{abort_connection, detach, prepare_mountpoint, Prepared};
use crate::sampler::Sampler;
use crate::{devfuse, engine, resolve, tree, uring};

/// A mounted, serving filesystem. Dropping it unmounts too.
pub struct FsHandle {
    mountpoint: PathBuf,
    /// The mount point was made by [`spawn`]: removed again on unmount.
    created_mountpoint: bool,
    metrics: Arc<FsMetrics>,
    unmounter: Option<SessionUnmounter>,
    uring: Option<uring::Running>,
    session: Option<JoinHandle<io::Result<()>>>,
    sampler: Option<Sampler>,
    conn: u32,
}

/// Raises the soft RLIMIT_NOFILE to the hard one: the server keeps a few cgroup files open per
/// container read recently and a pidfd per recent reader thread, which a 1024 soft limit would
/// cap at a few hundred containers. (1024 is only a soft default for select() users; nothing
/// here uses select.)
pub(crate) fn raise_nofile_limit() {
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
pub(crate) fn worker_threads(requested: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    requested.clamp(1, cpus.max(2))
}

/// Mounts the views at `cfg.mountpoint` and serves them on background threads.
pub fn spawn(cfg: FsConfig) -> Result<FsHandle, Error> {
    let h = cgsight_cgroup::Hierarchies::detect()?;
    let mp = cfg.mountpoint.clone();
    let created = match prepare_mountpoint(&mp)? {
        Prepared::Serving => return Err(Error::AlreadyServing(mp)),
        Prepared::Created => true,
        Prepared::Found => false,
    };
    let r = mount_and_serve(cfg, h, created);
    if r.is_err() && created {
        // A failed start leaves the directory tree as it found it.
        let _ = std::fs::remove_dir(&mp);
    }
    r
}

fn mount_and_serve(
    cfg: FsConfig,
    h: cgsight_cgroup::Hierarchies,
    created_mountpoint: bool,
) -> Result<FsHandle, Error> {
    let mp = cfg.mountpoint.clone();
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
    let tree = Arc::new(tree::Tree::new(engine.clone()));
    let mut session = Session::new(devfuse::CgFs::new(tree.clone(), pending), &mp, &config)
        .map_err(|source| Error::Mount {
            path: mp.clone(),
            source,
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
    let sampler = Sampler::start(engine).map_err(|source| Error::Io {
        path: mp.clone(),
        what: "starting the load sampler",
        source,
    })?;
    tracing::info!(mountpoint = %mp.display(), threads, io_uring = uring.is_some(), "serving /proc views");
    Ok(FsHandle {
        mountpoint: mp,
        created_mountpoint,
        metrics,
        unmounter: Some(unmounter),
        uring,
        session: Some(session),
        sampler: Some(sampler),
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
        if let Some(mut u) = self.unmounter.take() {
            if u.unmount().is_err() {
                let _ = detach(&self.mountpoint);
            }
            if self.created_mountpoint {
                // Ours, and empty once unmounted: leave the directory tree as it was found.
                let _ = std::fs::remove_dir(&self.mountpoint);
            }
        }
        if let Some(s) = self.sampler.take() {
            s.stop();
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

impl Drop for FsHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
