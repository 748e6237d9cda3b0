//! The launcher's error type: what failed, and the exit code the CLI returns for it.

use std::io;

use crate::spec::SpecError;
use crate::state::StateError;
use crate::EXIT_LAUNCHER;

/// Causes are part of each message rather than `source`s, so anyhow's `{:#}` in the binary
/// does not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{what}: {error}")]
    Sys {
        what: &'static str,
        error: nix::Error,
    },
    #[error("{what}: {error}")]
    Io { what: String, error: io::Error },
    #[error("{what}: {error}")]
    Cgroup {
        what: &'static str,
        error: cgsight_cgroup::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    #[error("seccomp {0}")]
    Seccomp(String),
    #[error("{0}")]
    Devices(String),
    #[error("network: {0}")]
    Network(String),
    #[error("--userns auto: {0}")]
    Userns(#[from] crate::userns::UsernsError),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is running: stop it first or use rm -f")]
    Running(String),
    #[error("no command given")]
    NoCommand,
    #[error("--require-proc-views: the /proc views cannot be served (the warning above says why); not started")]
    ViewsRequired,
    #[error("the container's pty was not received")]
    NoPty,
    #[error("invalid signal number {0}")]
    SignalNumber(i32),
    #[error("unknown signal {0:?}")]
    SignalName(String),
    /// Reported by a forked child (the container's init, an exec'd process) over its error
    /// pipe, with the exit code it chose (125, 126 or 127).
    #[error("{msg}")]
    Child { code: u8, msg: String },
}

impl LaunchError {
    /// The exit code for the CLI: the child's own code, else 125 (docker's convention).
    pub fn code(&self) -> u8 {
        match self {
            LaunchError::Child { code, .. } => *code,
            _ => EXIT_LAUNCHER,
        }
    }

    pub(crate) fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> Self {
        move |error| LaunchError::Sys { what, error }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |error| LaunchError::Io { what, error }
    }

    pub(crate) fn cgroup(what: &'static str) -> impl FnOnce(cgsight_cgroup::Error) -> Self {
        move |error| LaunchError::Cgroup { what, error }
    }

    /// Decodes a child's report: one exit-code byte, then the message.
    pub(crate) fn from_child_report(report: &[u8]) -> Option<Self> {
        let (&code, msg) = report.split_first()?;
        Some(LaunchError::Child {
            code,
            msg: String::from_utf8_lossy(msg).into_owned(),
        })
    }
}

/// Encodes a child's failure for [`LaunchError::from_child_report`].
pub(crate) fn child_report(code: u8, msg: &str) -> Vec<u8> {
    [&[code][..], msg.as_bytes()].concat()
}
