//! The server side of the hand-over: a process started by the holder serves the connection
//! whose descriptor it inherited, and stops without unmounting (the holder owns the mount).
//!
//! The holder passes, in the environment: the FUSE descriptor's number (`CGSIGHT_FS_FD`), a
//! pipe to write one byte on once serving (`CGSIGHT_FS_READY_FD`), the kernel's protocol minor
//! from INIT (`CGSIGHT_FS_KERNEL_MINOR`), and `CGSIGHT_FS_RESEND=1` when the previous server
//! died and what it had read should be sent again; `cgsight daemon`'s servers also get the
//! /metrics listener (`CGSIGHT_LISTEN_FD`).

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::config::FsConfig;
use crate::devloop::DevServer;
use crate::error::Error;
use crate::metrics::FsMetrics;
use crate::sampler::Sampler;
use crate::session::InitState;
use crate::{engine, resolve, tree};

pub const ENV_FD: &str = "CGSIGHT_FS_FD";
pub const ENV_READY_FD: &str = "CGSIGHT_FS_READY_FD";
pub const ENV_KERNEL_MINOR: &str = "CGSIGHT_FS_KERNEL_MINOR";
pub const ENV_RESEND: &str = "CGSIGHT_FS_RESEND";
pub const ENV_LISTEN_FD: &str = "CGSIGHT_LISTEN_FD";

/// What a server started by the holder inherited.
pub struct Handed {
    fd: RawFd,
    ready: RawFd,
    init: InitState,
    resend: bool,
    listener: Option<RawFd>,
}

impl Handed {
    /// The hand-over this process was started with, if any (and removes it from the
    /// environment, so nothing this process starts mistakes itself for a server).
    pub fn from_env() -> Option<Handed> {
        let num = |k: &str| std::env::var(k).ok()?.parse::<u32>().ok();
        let h = Handed {
            fd: num(ENV_FD)? as RawFd,
            ready: num(ENV_READY_FD)? as RawFd,
            init: InitState {
                kernel_minor: num(ENV_KERNEL_MINOR)?,
            },
            resend: std::env::var(ENV_RESEND).is_ok_and(|v| v == "1"),
            listener: num(ENV_LISTEN_FD).map(|n| n as RawFd),
        };
        for k in [
            ENV_FD,
            ENV_READY_FD,
            ENV_KERNEL_MINOR,
            ENV_RESEND,
            ENV_LISTEN_FD,
        ] {
            std::env::remove_var(k);
        }
        Some(h)
    }

    /// The listener the holder passed, if any (taken once).
    pub fn take_listener(&mut self) -> Option<std::net::TcpListener> {
        // SAFETY: the holder passed this descriptor for this process to own.
        self.listener
            .take()
            .map(|fd| unsafe { std::net::TcpListener::from_raw_fd(fd) })
    }
}

/// A serving hand-over server.
pub struct HandedServer {
    dev: DevServer,
    sampler: Sampler,
    metrics: Arc<FsMetrics>,
}

/// Serves the inherited connection and tells the holder once the workers are reading.
pub fn serve_handed(cfg: &FsConfig, h: Handed) -> Result<HandedServer, Error> {
    let hier = cgsight_cgroup::Hierarchies::detect()?;
    crate::server::raise_nofile_limit();
    let metrics = Arc::new(FsMetrics::default());
    let engine = Arc::new(engine::Engine::new(
        resolve::Resolver::new(hier),
        cfg.cpu_view,
        metrics.clone(),
    ));
    let tree = Arc::new(tree::Tree::new(engine.clone()));
    let io = |what: &'static str, source: std::io::Error| Error::Io {
        path: cfg.mountpoint.clone(),
        what,
        source,
    };
    // SAFETY: the holder passed these descriptors for this process to own.
    let (fd, ready) = unsafe { (OwnedFd::from_raw_fd(h.fd), OwnedFd::from_raw_fd(h.ready)) };
    let threads = crate::server::worker_threads(cfg.threads);
    let dev = DevServer::start(fd, h.init, threads, h.resend, tree)
        .map_err(|e| io("starting the FUSE workers", e))?;
    let sampler = Sampler::start(engine).map_err(|e| io("starting the load sampler", e))?;
    let mut ready = std::fs::File::from(ready);
    ready
        .write_all(b"R")
        .map_err(|e| io("telling the holder we serve", e))?;
    tracing::info!(
        mountpoint = %cfg.mountpoint.display(),
        threads,
        resend = h.resend && h.init.has_resend(),
        "serving /proc views (handed over by the holder)"
    );
    Ok(HandedServer {
        dev,
        sampler,
        metrics,
    })
}

impl HandedServer {
    pub fn metrics(&self) -> Arc<FsMetrics> {
        self.metrics.clone()
    }

    /// Whether the connection has ended (the holder unmounted it, or was killed with it).
    pub fn connection_ended(&self) -> bool {
        self.dev.is_finished()
    }

    /// Stops after the requests being answered; the mount stays with the holder.
    pub fn stop(self) {
        self.dev.stop();
        self.sampler.stop();
    }
}
