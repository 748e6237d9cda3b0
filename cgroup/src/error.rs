//! One error type for the crate: every I/O error names the path it concerns.

use std::io;
use std::path::PathBuf;

use crate::Controller;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },

    #[error("{path}: cannot parse {what} from {text:?}")]
    Parse {
        path: PathBuf,
        what: &'static str,
        text: String,
    },

    #[error("process {pid} does not exist (it may have exited)")]
    ProcessGone { pid: i32 },

    #[error("no cgroup filesystem is mounted (checked /proc/self/mountinfo)")]
    NoCgroupFs,

    #[error("the {0} controller is not available on this host")]
    NoController(Controller),

    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },

    #[error("cgroup {path} still has processes after {attempts} kill attempts")]
    Busy { path: PathBuf, attempts: u32 },

    #[error("{op} {path}: {source}")]
    Fs {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl Error {
    /// True when the error means the cgroup or process disappeared underneath us, which callers
    /// usually treat as "skip" rather than "fail".
    pub fn is_gone(&self) -> bool {
        match self {
            Error::ProcessGone { .. } => true,
            Error::Read { source, .. } | Error::Fs { source, .. } | Error::Write { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)
                )
            }
            _ => false,
        }
    }

    /// True when the error is the process (EMFILE) or system (ENFILE) running out of file
    /// descriptors: a transient state of the reader, not a fact about the cgroup.
    pub fn is_fd_exhaustion(&self) -> bool {
        match self {
            Error::Read { source, .. } | Error::Fs { source, .. } | Error::Write { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::EMFILE) | Some(libc::ENFILE)
                )
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
