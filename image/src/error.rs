//! The one error type of the image crate: each variant renders as one line saying what failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image reference {reference:?}: {why}")]
    Reference { reference: String, why: String },
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    Digest(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("registry {registry}: {why}")]
    Registry { registry: String, why: String },
    #[error("registry {registry} refused access to {what} (HTTP {status}): check the credentials")]
    Unauthorized {
        registry: String,
        what: String,
        status: u16,
    },
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("cannot reach registry {registry}: {why}")]
    Unreachable { registry: String, why: String },
    #[error("bad {what}: {why}")]
    Format { what: String, why: String },
    #[error("unsafe path {path:?} in layer {layer}: {why}")]
    UnsafePath {
        layer: String,
        path: PathBuf,
        why: &'static str,
    },
    #[error("no image {0:?} in the store")]
    NoSuchImage(String),
    #[error("image {0} is in use (pass force to remove it anyway)")]
    InUse(String),
    #[error("credentials: {0}")]
    Credentials(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an io::Error with what was being done, so the one line names the file.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

pub(crate) fn format(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
    Error::Format {
        what: what.into(),
        why: why.to_string(),
    }
}
