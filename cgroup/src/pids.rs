//! The pids controller.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::layout::Version;
use crate::parse::{self, join};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pids {
    pub current: u64,
    /// None = unlimited.
    pub max: Option<u64>,
}

/// The v1 and v2 root cgroups have no pids files; they count as unlimited with the number of
/// tasks from `cgroup.procs`' threads unknown, so `current` falls back to 0 there.
pub fn read(dir: &Path, _v: Version) -> Result<Pids> {
    let current = parse::read_u64_opt(&join(dir, "pids.current"))?.unwrap_or(0);
    let max = match parse::read_opt(&join(dir, "pids.max"))? {
        Some(t) => parse::limit_of(&join(dir, "pids.max"), &t)?,
        None => None,
    };
    Ok(Pids { current, max })
}
