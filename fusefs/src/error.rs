//! The crate's error: what failed, and where.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cgroup layout: {0}")]
    Cgroup(#[from] cgsight_cgroup::Error),
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("a cgsight fs is already serving {0}")]
    AlreadyServing(PathBuf),
    #[error("FUSE over io_uring: {0}")]
    IoUring(String),
    #[error("mounting FUSE at {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
}
