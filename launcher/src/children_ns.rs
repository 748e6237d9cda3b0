//! The namespaces the supervisor sets for the children it forks (not for itself): a time
//! namespace whose boottime starts at the launch, and a pid namespace it gives back afterwards.

use std::fs;
use std::os::fd::OwnedFd;

use nix::sched::CloneFlags;
use nix::time::{clock_gettime, ClockId};
use tracing::warn;

/// Unshares the time namespace for our children and writes the boottime offset so the
/// container's uptime starts at ~0. Must run before any process enters the namespace.
pub(crate) fn time_namespace() {
    // nix has no CLONE_NEWTIME constant; the kernel's value is passed through.
    if let Err(e) = nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)) {
        warn!("no time namespace (kernel < 5.6?): the container's uptime will be the host's: {e}");
        return;
    }
    let Ok(ts) = clock_gettime(ClockId::CLOCK_BOOTTIME) else {
        return;
    };
    let (s, ns) = if ts.tv_nsec() > 0 {
        (-ts.tv_sec() - 1, 1_000_000_000 - ts.tv_nsec())
    } else {
        (-ts.tv_sec(), 0)
    };
    if let Err(e) = fs::write("/proc/self/timens_offsets", format!("boottime {s} {ns}\n")) {
        warn!("cannot set the container's boottime offset: {e}");
    }
}

/// Our own pid namespace, restored for our children on drop. Once the container's pid 1 has
/// exited, its namespace is dead and fork() fails with ENOMEM: the cleanup's own children (`nft`
/// removing a container's published ports) must be forked into ours again.
pub(crate) struct HostPidns(Option<OwnedFd>);

impl HostPidns {
    pub(crate) fn keep() -> Self {
        HostPidns(fs::File::open("/proc/self/ns/pid").ok().map(OwnedFd::from))
    }
}

impl Drop for HostPidns {
    fn drop(&mut self) {
        if let Some(fd) = &self.0 {
            if let Err(e) = nix::sched::setns(fd, CloneFlags::CLONE_NEWPID) {
                warn!("restoring the supervisor's pid namespace for its children: {e}");
            }
        }
    }
}
