//! The container launcher behind `cgsight launch` and the lifecycle verbs.
//!
//! - [`image`]: the image a container runs on (its layer directories, as the CLI resolved them).
//! - [`user`]: `-u USER[:GROUP]` looked up in the container's passwd/group files.
//! - [`spec`]: command-line values -> a validated [`spec::ContainerSpec`] (pure).
//! - [`state`]: the registry under `/run/cgsight/containers/<id>/state.json`.
//! - [`supervisor`]: `launch`: prepare, fork the container, wait, record the exit.
//! - [`child`]: the container's pid 1 between fork and exec (and `--init`).
//! - [`mounts`]: the container's root: overlay, runtime-default mounts, views, pivot_root.
//! - [`volumes`]: `-v` targets resolved inside the container's root, then bound.
//! - [`caps`]: docker's default capability set, no_new_privs, rlimits.
//! - [`exec`]: joining a running container.
//! - [`lifecycle`]: stop, kill, remove, waiting for an exit.
//! - [`startup`]: the one daemonize + ready-or-error handshake (`launch -d`, `cgsight fs`).
//! - [`views`]: where the /proc views are served, and starting them.
//! - [`repair`]: a new views server binding its live views over running containers' dead ones.
//! - [`network`]: `--net` modes: the namespace pid 1 joins, the bridge attachment, /etc files.
//! - [`pty`]: opening a pty and making it a child's terminal.
//! - [`tty`]: the supervisor's side of the pty (raw mode, resize, EOF).
//! - [`wait`]: waiting for the command: signals forwarded, orphans reaped, pty proxied.
//! - [`security`]: seccomp profile, device allow-list and `--device`, `--userns` choices.
//! - [`error`]: [`LaunchError`] and its exit codes.
//! - [`userns`]: `--userns auto`: id ranges, uid/gid maps, idmapped mounts.
//! - `children_ns`: the time and pid namespaces the supervisor sets for its children.
//! - `sys`: small syscall helpers (pipes, fd I/O, blocking signals, mounts).

pub mod caps;
mod child;
mod children_ns;
pub mod error;
pub mod exec;
mod hostdev;
pub mod image;
pub mod lifecycle;
pub mod mounts;
pub mod network;
mod pty;
pub mod repair;
pub mod security;
pub mod spec;
pub mod startup;
pub mod state;
pub mod supervisor;
mod sys;
mod sysinfo;
mod tty;
pub mod user;
pub mod userns;
pub mod views;
pub mod volumes;
mod wait;

pub use error::LaunchError;
pub use spec::{ContainerSpec, SpecError};
pub use state::{State, Status, Store};

/// Exit code for errors of the launcher itself (docker convention).
pub const EXIT_LAUNCHER: u8 = 125;
/// The command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;
