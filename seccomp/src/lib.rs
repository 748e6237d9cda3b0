//! Seccomp for cgsight containers, with docker's semantics.
//!
//! [`Profile::docker_default`] or [`Profile::from_json`] (docker's format) → [`Cache::load_or_compile`]
//! with the container's [`Target`] (capabilities, kernel) → [`Program::install`] in the child.
//!
//! - [`error`]: what can go wrong before the filter reaches the kernel.
//! - [`format`]: docker's profile JSON as serde structs.
//! - [`profile`]: the validated profile: actions, argument comparisons, rule conditions.
//! - [`default_profile`]: the built-in profile, docker's default as our own table.
//! - [`caps`]: capability sets by number and the `CAP_*` names profiles use.
//! - [`kernel`]: kernel version parsing for `minKernel`.
//! - [`resolve`]: which rules and architectures hold for one container.
//! - [`compile`]: profile → BPF through libseccomp (and why libseccomp).
//! - [`program`]: the compiled BPF and its allocation-free install.
//! - [`notify`]: the listener's side of [`Action::Notify`] (receive, validate, answer).
//! - [`cache`]: compiled programs on disk, keyed by everything they depend on.

pub mod cache;
pub mod caps;
pub mod compile;
pub mod default_profile;
pub mod error;
pub mod format;
pub mod kernel;
pub mod notify;
pub mod profile;
pub mod program;
pub mod resolve;

pub use cache::{Cache, Loaded};
pub use caps::CapSet;
pub use compile::{compile, Compiled};
pub use error::{Error, Result};
pub use kernel::KernelVersion;
pub use notify::{Listener, Reply, Request};
pub use profile::{Action, ArgCmp, CmpOp, Profile, Rule};
pub use program::Program;
pub use resolve::Target;

impl Profile {
    /// The built-in default (see [`default_profile`]).
    pub fn docker_default() -> Self {
        default_profile::docker_default()
    }
}
