//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong setting up or tearing down a container's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid port publication {spec:?}: {reason}")]
    BadPublish { spec: String, reason: String },
    #[error("host port {port}/{proto} is already published by container {owner}")]
    PortTaken {
        port: u16,
        proto: &'static str,
        owner: String,
    },
    #[error("invalid subnet {spec:?}: {reason}")]
    BadSubnet { spec: String, reason: String },
    #[error("configured subnet {subnet} overlaps {what} {other} on this host")]
    SubnetOverlap {
        subnet: String,
        what: &'static str,
        other: String,
    },
    #[error("no free subnet: every default pool overlaps a route or address on this host")]
    NoFreeSubnet,
    #[error("subnet {0} has no free address left")]
    PoolExhausted(String),
    #[error("bad network config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("corrupt network state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("invalid container id {0:?}: use 1-64 characters of [A-Za-z0-9_.-]")]
    BadId(String),
    #[error("netlink {op}: {source}")]
    Netlink { op: String, source: io::Error },
    #[error("netlink reply for {op} could not be decoded: {reason}")]
    NetlinkDecode { op: String, reason: String },
    #[error("nft failed ({status}): {stderr}")]
    Nft { status: String, stderr: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
