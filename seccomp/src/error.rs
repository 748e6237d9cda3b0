//! Errors of profile parsing, compilation and the compiled-program cache.

use std::path::PathBuf;

/// Everything that can go wrong before the filter reaches the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp profile is not valid JSON in docker's format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("seccomp profile: unknown action {0:?} (expected SCMP_ACT_*)")]
    UnknownAction(String),
    #[error("seccomp profile: unknown argument operator {0:?} (expected SCMP_CMP_*)")]
    UnknownOp(String),
    #[error("seccomp profile: unknown architecture {0:?} (expected SCMP_ARCH_*)")]
    UnknownArch(String),
    #[error("seccomp profile: unknown filter flag {0:?} (one of SECCOMP_FILTER_FLAG_TSYNC, _LOG, _SPEC_ALLOW, _WAIT_KILLABLE_RECV)")]
    UnknownFlag(String),
    #[error("seccomp profile: both {0:?} and {1:?} given; use one")]
    Both(&'static str, &'static str),
    #[error("seccomp profile: syscall rule #{rule} has no names")]
    NoNames { rule: usize },
    #[error("seccomp profile: syscall rule #{rule}: argument index {index} is out of range 0..=5")]
    ArgIndex { rule: usize, index: u32 },
    #[error("seccomp profile: bad minKernel {0:?} (expected MAJOR.MINOR)")]
    MinKernel(String),
    #[error("seccomp profile: errnoRet {0} is not an errno (1..=4095)")]
    ErrnoRet(u32),
    #[error("libseccomp: {what}: {source}")]
    Libseccomp {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("compiled seccomp program is malformed: {0}")]
    BadProgram(String),
    #[error("seccomp cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exporting the seccomp BPF program: {0}")]
    Export(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
