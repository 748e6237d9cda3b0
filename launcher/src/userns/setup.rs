//! The launcher's side of `--userns auto`, in the module doc's call order: what the supervisor
//! prepares before fork, and where a container's range is recorded and freed.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::maps::{self, Handshake};
use super::subid::{DEFAULT_OWNER, SUBGID, SUBUID};
use super::{idmap, Allocator, IdRange, Pool, UsernsError};

/// Where ranges are recorded (`CGSIGHT_USERNS_DIR`, default /var/lib/cgsight/userns).
pub fn records_dir() -> PathBuf {
    std::env::var_os("CGSIGHT_USERNS_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/lib/cgsight/userns"), PathBuf::from)
}

/// The allocator over /etc/subuid + /etc/subgid for [`DEFAULT_OWNER`] (or the built-in range).
pub fn allocator() -> Result<Allocator, UsernsError> {
    let pool = Pool::load(DEFAULT_OWNER, Path::new(SUBUID), Path::new(SUBGID))?;
    Ok(Allocator::new(records_dir(), pool))
}

/// Frees container `id`'s range. Needs no pool (a record is removed whatever the pool), so a
/// broken /etc/subuid never keeps `rm` from returning a range.
pub fn free(id: &str) -> Result<(), UsernsError> {
    Allocator::new(records_dir(), Pool { slots: Vec::new() }).free(id)
}

/// The range recorded for `id`, if any (for `inspect`).
pub fn recorded(id: &str) -> Option<IdRange> {
    Allocator::new(records_dir(), Pool { slots: Vec::new() })
        .get(id)
        .ok()
        .flatten()
}

/// What the supervisor holds across the fork.
pub struct Prepared {
    pub range: IdRange,
    /// With `--rootfs` or an image: a user namespace with the range's maps, for the idmapped
    /// lower layers.
    pub userns_fd: Option<OwnedFd>,
    pub handshake: Handshake,
}

/// Steps 1-4 of the call order: allocate `id`'s range, give container root its writable
/// layer, and (with an image root) the idmap namespace. The caller frees the range on failure.
pub fn prepare(id: &str, writable: &[&Path], idmap_root: bool) -> Result<Prepared, UsernsError> {
    let range = allocator()?.allocate(id)?;
    idmap::chown_writable(writable, &range)?;
    let userns_fd = if idmap_root {
        Some(maps::userns_fd(&range)?)
    } else {
        None
    };
    Ok(Prepared {
        range,
        userns_fd,
        handshake: Handshake::new()?,
    })
}
