//! The container launcher behind `cgsight launch` and the lifecycle verbs.
//!
//! - [`spec`]: command-line values -> a validated [`spec::ContainerSpec`] (pure).
//! - [`state`]: the registry under `/run/cgsight/containers/<id>/state.json`.
//! - [`mounts`]: the container's root: overlay, runtime-default mounts, views, pivot_root.
//! - [`caps`]: docker's default capability set, no_new_privs, rlimits.
//! - [`process`]: the supervisor, the container init, signals, the pty, exit codes.
//! - [`exec`]: joining a running container.
//! - [`userns`]: `--userns auto`: id ranges, uid/gid maps, idmapped mounts.

pub mod caps;
pub mod exec;
pub mod mounts;
pub mod process;
pub mod spec;
pub mod state;
mod sys;
pub mod userns;

pub use spec::{ContainerSpec, SpecError};
pub use state::{State, Status, Store};

/// Exit code for errors of the launcher itself (docker convention).
pub const EXIT_LAUNCHER: u8 = 125;
/// The command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;
