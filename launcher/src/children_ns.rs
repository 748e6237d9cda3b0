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

/// Our own pid and time namespaces, restored for our children on drop, so the cleanup can start
/// processes (`nft` removing a container's published ports):
/// - once the container's pid 1 has exited its pid namespace is dead, and fork() into it fails
///   with ENOMEM;
/// - a pending time namespace makes the vfork-style spawn std uses fail with EINVAL on kernels
///   before 6.x's relaxation (Debian's 6.1), as CLONE_VM cannot cross into another time
///   namespace.
pub(crate) struct HostNs {
    pid: Option<OwnedFd>,
    time: Option<OwnedFd>,
}

impl HostNs {
    /// Call before unsharing: the files name the namespaces this process is in.
    pub(crate) fn keep() -> Self {
        let open = |p: &str| fs::File::open(p).ok().map(OwnedFd::from);
        HostNs {
            pid: open("/proc/self/ns/pid"),
            time: open("/proc/self/ns/time"),
        }
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        // Time first: setns(CLONE_NEWTIME) wants a single-threaded caller, as the supervisor is.
        let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
        for (fd, flag, what) in [
            (&self.time, time, "time"),
            (&self.pid, CloneFlags::CLONE_NEWPID, "pid"),
        ] {
            if let Some(fd) = fd {
                if let Err(e) = nix::sched::setns(fd, flag) {
                    warn!("restoring the supervisor's {what} namespace for its children: {e}");
                }
            }
        }
    }
}
