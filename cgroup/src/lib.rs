//! The cgroup model shared by every part of cgsight.
//!
//! - [`Hierarchies`]: which hierarchies are mounted where (legacy v1, hybrid, unified v2).
//! - [`Membership`] / [`pidns_init`]: from a pid or thread id to its cgroups and its container's init.
//! - [`Cgroup`]: one cgroup across hierarchies, with typed readers and effective (min over
//!   ancestors) limits. Readers are also exposed per controller module for hot paths that cache
//!   directories.
//! - [`Managed`]: create, limit, attach, kill and remove.
//! - [`mountinfo`]: the one mountinfo reader of every part.
//! - [`format`]: the shared text formats (single values, limits, flat-keyed files), pure
//!   parsers over text the caller read; per-file formats sit with their controller
//!   ([`cpu::usage_all`], [`cpu::parse_stat_v2`], [`memory::MemCounters`] and the
//!   [`memory::StatKey`] v1/v2 key map, [`pressure::parse_psi`]).
//! - [`tasks`]: a cgroup subtree's threads by state (R/D counts for loadavg and /proc/stat).

pub mod cgroup;
pub mod cpu;
pub mod cpulist;
mod error;
pub mod format;
pub mod io;
pub mod layout;
pub mod manage;
pub mod memory;
pub mod mountinfo;
pub mod oom;
mod parse;
pub mod pids;
pub mod pressure;
pub mod process;
pub mod tasks;

pub use cgroup::{Cgroup, ControllerDir, Cpuset};
pub use cpulist::CpuList;
pub use error::{Error, Result};
pub use format::limit_of;
pub use layout::{Controller, Hierarchies, Layout, Mount, Version};
pub use manage::{Managed, Resources};
pub use process::{pidns_init, pidns_inode, start_ticks, Membership, ProcStatus};
