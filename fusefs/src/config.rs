//! What `spawn` is asked for: mount point, CPU view, worker threads, transport.

use std::path::PathBuf;

/// Where `cgsight fs` mounts by default (and where the launcher looks for the views).
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

/// The filesystem to mount and serve.
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
