//! The cgroup model shared by every part of cgsight.
//!
//! - [`Hierarchies`]: which hierarchies are mounted where (legacy v1, hybrid, unified v2).
//! - [`Membership`] / [`pidns_init`]: from a pid or thread id to its cgroups and its container's init.
//! - [`Cgroup`]: one cgroup across hierarchies, with typed readers and effective (min over
//!   ancestors) limits. Readers are also exposed per controller module for hot paths that cache
//!   directories.
//! - [`Managed`]: create, limit, attach, kill and remove.
//! - [`devices`]: the kernel-enforced device allow-list (v1 controller or v2 BPF program).
//! - [`mountinfo`]: the one mountinfo reader of every part.

pub mod cgroup;
pub mod cpu;
pub mod cpulist;
pub mod devices;
mod error;
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

pub use cgroup::{Cgroup, ControllerDir, Cpuset};
pub use cpulist::CpuList;
pub use error::{Error, Result};
pub use layout::{Controller, Hierarchies, Layout, Mount, Version};
pub use manage::{Managed, Resources};
pub use parse::limit_of;
pub use process::{pidns_init, pidns_inode, start_ticks, Membership, ProcStatus};
