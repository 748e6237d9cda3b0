//! `--userns auto`: container root becomes an unprivileged host id range.
//!
//! - [`subid`]: /etc/subuid + /etc/subgid (or a built-in range) -> a [`Pool`] of 65536-id slots (pure).
//! - [`alloc`]: one slot per container, recorded on disk under a flock so launches never share one.
//! - [`maps`]: the parent/child handshake that writes `uid_map`/`gid_map`, and throwaway userns fds.
//! - [`idmap`]: idmapped clones of a directory (`--rootfs`, each image layer) and the writable
//!   layer's ownership.
//! - [`net`]: low ports and ping for container root in a net namespace host root owns.
//! - [`setup`]: the launcher's glue: records dir, allocate + chown + handshake before fork, free.
//!
//! # Call order (for the launcher)
//!
//! The overlay is mounted by *host* root and the user namespace is entered last, after
//! `pivot_root`. Copy-up then runs with host root's credentials (so writing under a
//! host-root-owned directory such as the lower `/tmp` works), while every access is still
//! checked against the container's credentials: host uid 0 is not mapped, so a host-root file
//! shows as `nobody` and only its "other" bits apply (`/etc/shadow` stays unreadable).
//!
//! Supervisor, before fork:
//! 1. `Allocator::new(dir, Pool::load(owner, SUBUID, SUBGID)?).allocate(id)?` -> [`IdRange`].
//! 2. [`idmap::chown_writable`]`(&[upper, work], range)`: container root owns its layer.
//! 3. With `--rootfs DIR` or an image: [`maps::userns_fd`]`(range)?`, kept open across the fork.
//! 4. [`maps::Handshake::new`]`()?`.
//!
//! Container child (after fork, as host root, in its new mount namespace):
//! 5. With `--rootfs DIR`: `attach_tree(idmapped_tree(DIR, userns_fd, false)?, STAGING)?`, then
//!    mount the overlay with `lowerdir=STAGING` (overlayfs accepts idmapped layers since 5.19).
//!    With an image, the same for each layer, onto `m/0`, `m/1`, ... in the container's
//!    directory (relative names keep a long layer list within the mount option page).
//! 6. With a private net namespace, right after unsharing it:
//!    [`net::open_low_ports_and_ping`]`(range)`. Build the root as today, up to and including
//!    `pivot_root`.
//! 7. `handshake.child().enter()?`: unshare(CLONE_NEWUSER), wait for the maps, become uid/gid 0
//!    (inside) with no supplementary groups. Then drop capabilities and exec as today.
//!
//! Supervisor, after fork: `handshake.parent().map(child_pid, &range)?` (blocks until step 7
//! has unshared). On container removal: `allocator.free(id)`.
//!
//! # What follows from this order
//!
//! - Every other namespace belongs to host root; container root's capabilities reach only its
//!   own user namespace and files whose ids it maps. Docker's default set loses nothing it
//!   could use but low ports and raw/ICMP sockets, which [`net`] gives back per namespace.
//! - Joining (`cgsight exec`): setns into the other namespaces as host root first, then
//!   [`maps::join`]`(/proc/PID/ns/user)` last (after it, host root's privileges over them are
//!   gone).
//! - Becoming root inside makes the process non-dumpable until exec (the kernel does so on
//!   any id change); a process that never execs (an init) may want PR_SET_DUMPABLE back.
//! - Not chosen: mounting the overlay inside the user namespace. Its copy-up then runs as
//!   container root, which cannot recreate an unmapped owner: writing under host `/tmp`
//!   fails with EOVERFLOW (measured on 6.18).

pub mod alloc;
pub mod idmap;
pub mod maps;
pub mod net;
pub mod setup;
pub mod subid;

use std::path::PathBuf;

pub use alloc::Allocator;
pub use subid::Pool;

/// Ids per container: a full 16-bit range, as podman and LXD give.
pub const RANGE_SIZE: u32 = 65536;

/// A container's ids: container uid/gid `n` is host `uid + n` / `gid + n`, for `n < count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdRange {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

impl IdRange {
    /// The `uid_map` line: container 0.. -> host `uid`...
    pub fn uid_map(&self) -> String {
        format!("0 {} {}\n", self.uid, self.count)
    }

    /// The `gid_map` line.
    pub fn gid_map(&self) -> String {
        format!("0 {} {}\n", self.gid, self.count)
    }

    /// Whether the uid or gid span of `self` overlaps that of `other`.
    pub fn overlaps(&self, other: &IdRange) -> bool {
        spans_overlap(self.uid, self.count, other.uid, other.count)
            || spans_overlap(self.gid, self.count, other.gid, other.count)
    }
}

/// Whether `[a, a+an)` and `[b, b+bn)` share an id (computed in u64: ranges may end at 2^32).
pub(crate) fn spans_overlap(a: u32, an: u32, b: u32, bn: u32) -> bool {
    let (a, an, b, bn) = (u64::from(a), u64::from(an), u64::from(b), u64::from(bn));
    a < b + bn && b < a + an
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("{path}: line {line}: {reason}")]
    Subid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("subordinate ids for {owner}: {reason}")]
    Pool { owner: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("id range record {path} is unreadable ({reason}); remove it if its container is gone")]
    State { path: PathBuf, reason: String },
    #[error("invalid container id {0:?} for an id range record")]
    BadId(String),
    #[error("no free id range: all {0} ranges are in use")]
    Exhausted(usize),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "cannot idmap {path}: {source} (idmapped mounts need Linux 5.12+ and a filesystem \
         that supports them, e.g. ext4, xfs, btrfs, tmpfs from 6.3)"
    )]
    IdmapUnsupported {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl UsernsError {
    pub(crate) fn sys(what: impl Into<String>) -> Self {
        UsernsError::Sys {
            what: what.into(),
            source: std::io::Error::last_os_error(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        UsernsError::Io {
            path: path.into(),
            source,
        }
    }
}
