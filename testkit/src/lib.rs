//! Test support: every resource a test makes is owned by a guard that removes it on drop, so a
//! failing (panicking) test cleans up too. Names are unique per process and call and start with
//! `cgsight-test-`, so parallel tests never collide and leftovers are easy to find.
//!
//! - [`cgroup`]: a test cgroup (killed and removed on drop) and spawning straight into one.
//! - [`process`]: a child killed and reaped on drop; servers that report the port they bound.
//! - [`fs`]: temporary directories and mounts, removed and detached on drop.
//! - [`oci`]: hand-built layered test images (OCI layouts), a tree walk, skopeo copies.
//! - [`registry`]: a throwaway docker-registry on a free loopback port.
//! - [`fuse`]: what the kernel offers FUSE (io_uring) and a server's io_uring counters.
//! - [`http`]: a minimal HTTP/1.1 GET for talking to test servers on loopback.
//! - [`prometheus`]: a private Prometheus (stopped and its storage removed on drop).
//! - [`wait`]: polling for a condition instead of sleeping.

pub mod cgroup;
pub mod fs;
pub mod fuse;
pub mod http;
pub mod oci;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod wait;

use std::sync::atomic::{AtomicU32, Ordering};

pub use cgroup::{spawn_in_cgroup, TestCgroup};
pub use fs::{is_mounted, MountGuard, TempDir};
pub use fuse::{fs_io_uring_arg, io_uring_completions, kernel_has_fuse_io_uring};
pub use process::{catches_signal, spawn_listening, ChildGuard};
pub use prometheus::Prometheus;
pub use wait::wait_for;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `cgsight-test-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("cgsight-test-{tag}-{}-{n}", std::process::id())
}

/// True when running as root; the live tests need it.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `tool --version` runs (the tool is installed).
pub fn tool_available(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Live tests need root; fail loudly rather than pass without testing anything.
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            $crate::is_root(),
            "this test creates real cgroups, mounts and namespaces: run it as root"
        );
    };
}
