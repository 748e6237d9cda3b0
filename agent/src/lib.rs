//! cgsight's metrics agent: cAdvisor-compatible Prometheus families for every container on the
//! host (cgroup v1, hybrid and v2), plus PSI, OOM kills, an info metric and the agent's own health.
//!
//! - [`discover`]: which cgroups, and which runtime owns them (pure path classification);
//! - [`labels`]: names and images from the runtimes' state files;
//! - [`collect`]: one scrape: discovery, the per-cgroup cache, error counting;
//! - [`errors`]: scrape error counts and their rate-limited log;
//! - [`read`]: one cgroup's readings through its kept-open files;
//! - [`parse`]: fast paths for the per-cgroup text (memory.stat lines, PSI totals);
//! - [`files`]: accounting files kept open and pread, within the descriptor limit;
//! - [`families`]: every exported family as a table row, and the pure encoder over plain rows;
//! - [`host`]: host facts (CPUs, memory, boot time, root device, netns, block device names);
//! - [`exposition`]: the text encoder and the OpenMetrics conversion;
//! - [`process`]: the agent's own process (`process_*`) from /proc/self;
//! - [`netdev`]: `/proc/<pid>/net/dev` parsing;
//! - [`webconfig`]: exporter-toolkit `--web-config` (TLS, basic-auth users);
//! - [`auth`]: basic-auth checks off the request path (verifier thread, bounded queue, cache);
//! - [`accept`]: closing connections that never send a complete request header;
//! - [`server`]: axum router, scrape timeouts, TLS and auth;
//! - [`conns`]: the accept loop, and connections that finish their request at shutdown.

pub mod accept;
pub mod auth;
pub mod collect;
pub mod conns;
pub mod discover;
pub mod errors;
pub mod exposition;
pub mod families;
pub mod files;
pub mod host;
pub mod labels;
pub mod netdev;
pub mod parse;
pub mod process;
pub mod read;
pub mod server;
pub mod webconfig;

use std::net::SocketAddr;
use std::sync::Arc;

pub use server::Config;

/// An extra exposition producer appended to each /metrics body (HELP/TYPE included).
pub type Producer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Default state directory of cgsight containers.
pub const DEFAULT_STATE_DIR: &str = "/run/cgsight/containers";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9723";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cgroup layout: {0}")]
    Cgroup(cgsight_cgroup::Error),
    #[error("web config: {0}")]
    WebConfig(#[from] webconfig::Error),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the agent on its own runtime until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(server::serve(cfg, server::termination()))
}
