//! The cgroup model shared by every part of cgsight: one reader per cgroup file, one parser
//! per file format.
//!
//! - [`layout`]: which hierarchies are mounted where ([`Hierarchies`]: legacy v1, hybrid, v2).
//! - [`mountinfo`]: the one /proc/self/mountinfo reader of every part.
//! - [`process`]: from a pid or thread id to its cgroups ([`Membership`]) and its container's
//!   init ([`pidns_init`]); `/proc/<pid>/stat` and `status` fields.
//! - [`cgroup`]: one cgroup across hierarchies ([`Cgroup`]), with typed readers and effective
//!   (min over ancestors) limits.
//! - [`mod@format`]: the shared text formats (single values, limits, flat-keyed files) as pure
//!   parsers over text the caller read.
//! - [`cpu`]: quota, shares/weight, usage (`cpuacct.usage_all`, v2 `cpu.stat`), throttling.
//! - [`memory`]: limits, usage, swap, memory.stat with its v1/v2 key map ([`memory::StatKey`]).
//! - [`io`]: block I/O per device (v1 blkio, v2 io.stat).
//! - [`pids`]: pids.current and pids.max.
//! - [`oom`]: OOM events (v1 memory.oom_control, v2 memory.events).
//! - [`pressure`]: PSI (`*.pressure`), the one PSI parser.
//! - [`cpulist`]: `0-3,7` CPU and node lists.
//! - [`tasks`]: a cgroup subtree's threads by state (R/D counts for loadavg and /proc/stat).
//! - [`manage`]: create, limit, attach, kill and remove ([`Managed`]).
//! - [`devices`]: the kernel-enforced device allow-list (v1 controller or v2 BPF program).
//! - `parse`: whole-file readers naming their path in every error.
//! - `error`: the crate's [`Error`].

pub mod cgroup;
pub mod cpu;
pub mod cpulist;
pub mod devices;
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
