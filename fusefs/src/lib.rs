//! lxcfs-style /proc and /sys views over FUSE, computed per read from the calling process's
//! container cgroup (cgroup v1, hybrid and v2). Every cgroup file format is parsed by
//! `cgsight_cgroup`; this crate only gathers, renders and serves.
//!
//! Modules, from the request inwards:
//! - `server`: [`spawn`] mounts and serves on background threads; [`FsHandle`] ends it.
//! - `mount`: the mount's lifecycle: [`is_serving`] (bounded), mount point, stale mounts,
//!   the server's pid and log files ([`pidfile_path`], [`log_path`]).
//! - [`holder`]: the process that owns the mount and its /dev/fuse descriptor, and starts,
//!   restarts and upgrades servers ([`hold`]); `session`: our own mount and INIT answer.
//! - [`handed`]: a server started by the holder ([`serve_handed`]); `devloop`: its /dev/fuse
//!   workers; `dispatch`: one request → its reply, for both /dev/fuse and io_uring.
//! - `probe`: a read in a forked child, killed after a timeout (a stuck FUSE read is not).
//! - [`config`]: [`FsConfig`] and its choices ([`CpuView`], [`IoUringMode`]).
//! - `devfuse`: the /dev/fuse transport (fuser), which also negotiates io_uring at INIT.
//! - `uring`, `abi`: the FUSE-over-io_uring transport, one ring per CPU (Linux 6.14+).
//! - `tree`: the transport-neutral tree (inodes, attributes, errnos, per-handle snapshots).
//! - [`catalogue`]: the served files, their labels and the host files they virtualize.
//! - `engine`: gathers cgroup facts per request, falls back to the host file on failure.
//! - `resolve`: caller thread → container init (cached per pid namespace, pidfd-validated) → cgroup.
//! - `cgfiles`: cgroup files kept open per container, re-read with pread at offset 0.
//! - `load`: a container's load state (R/D counts, loadavg's moving averages).
//! - `sampler`: the thread that steps every recently read container's load each 5 s.
//! - [`sysinfo`]: sysinfo(2)'s numbers for one container, from the same engine (the launcher
//!   answers intercepted calls with them).
//! - `host`: the host's own files, cached briefly where only their layout is used.
//! - [`views`]: pure renderers, one module per file, unit tested with v1 and v2 fixtures.
//! - [`metrics`]: Prometheus counters of the views.
//! - [`error`]: the crate's error.

mod abi;
pub mod catalogue;
mod cgfiles;
pub mod config;
mod devfuse;
mod devloop;
mod dispatch;
mod engine;
pub mod error;
pub mod handed;
pub mod holder;
mod host;
mod load;
pub mod metrics;
mod mount;
mod probe;
mod resolve;
mod sampler;
mod server;
mod session;
pub mod sysinfo;
mod tree;
mod uring;
pub mod views;

pub use catalogue::File;
pub use config::{CpuView, FsConfig, IoUringMode, DEFAULT_MOUNTPOINT};
pub use error::Error;
pub use handed::{serve_handed, Handed, HandedServer};
pub use holder::{hold, read_status, HoldConfig};
pub use metrics::FsMetrics;
pub use mount::{
    is_serving, log_path, pidfile_path, serving_state, start_serving_probe, Serving, ServingProbe,
};
pub use probe::{read_bounded, Probe};
pub use server::{spawn, FsHandle};
pub use sysinfo::{ContainerFacts, Sysinfo, SysinfoError};
