//! The device allow-list a container gets, enforced by the kernel: the v1 `devices` controller
//! where one is mounted, else a `BPF_CGROUP_DEVICE` program on the container's cgroup2 directory.
//!
//! - [`rules`]: rules in `devices.allow` syntax, runc's defaults, and the [`Table`] semantics
//!   both enforcers share.
//! - [`spec`]: docker's `--device HOST[:CONTAINER][:rwm]`.
//! - [`v1`]: writing a table to `devices.deny`/`devices.allow`.
//! - [`program`]: a table compiled to eBPF; [`bpf`]: loading and attaching it.
//!
//! Launcher use: create the container cgroup with [`Controller::Devices`] among its controllers
//! (in [`crate::manage::CONTAINER_CONTROLLERS`]), attach the blocked child, call [`apply`], then
//! release the child to exec. Nothing to undo: the rules go with the cgroup.

pub mod bpf;
pub mod program;
pub mod rules;
pub mod spec;
pub mod v1;

use std::io;
use std::path::PathBuf;

use crate::cgroup::Cgroup;
use crate::layout::{Controller, Hierarchies, Version};

pub use rules::{default_rules, Access, Exception, Kind, Rule, Table};
pub use spec::{parse_device_spec, resolve_device, rules_with_devices, DeviceMapping, DeviceSpec};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device rule {text:?}: {why}")]
    Rule { text: String, why: &'static str },

    #[error("--device {spec:?}: {why}")]
    Spec { spec: String, why: String },

    #[error("--device {spec:?}: {path}: {source}")]
    HostPath {
        spec: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("--device {spec:?}: {path} is not a character or block device")]
    NotADevice { spec: String, path: PathBuf },

    #[error("writing {value:?} to {path}: {source}{hint}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
        hint: &'static str,
    },

    #[error("{op}: {source}{}", if log.is_empty() { String::new() } else { format!("; verifier log:\n{log}") })]
    Bpf {
        op: String,
        source: io::Error,
        log: String,
    },

    #[error("cannot enforce device rules on cgroup {path:?}: {why}")]
    NoEnforcer { path: String, why: &'static str },
}

/// Which kernel mechanism holds a container's device rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enforcer {
    /// The v1 devices cgroup directory.
    V1(PathBuf),
    /// The cgroup2 directory a device program is attached to.
    Bpf(PathBuf),
}

/// Where `cg`'s device rules go: the v1 devices controller when this host mounts one (legacy
/// and most hybrid hosts), else the cgroup2 directory (unified hosts, and hybrid hosts without a
/// v1 devices hierarchy). The kernel checks both mechanisms, so the one the container's
/// processes are really confined by is the one that has the controller.
pub fn enforcer(h: &Hierarchies, cg: &Cgroup) -> Result<Enforcer, DeviceError> {
    let none = |why| DeviceError::NoEnforcer {
        path: cg.path.clone(),
        why,
    };
    if h.mount_for(Controller::Devices).map(|m| m.version) == Some(Version::V1) {
        return match cg.dir(Controller::Devices) {
            Some(d) if d.version == Version::V1 => Ok(Enforcer::V1(d.dir.clone())),
            _ => Err(none(
                "it was created without the v1 devices controller (include Controller::Devices)",
            )),
        };
    }
    match &cg.unified {
        Some(u) => Ok(Enforcer::Bpf(u.clone())),
        None => Err(none(
            "the host mounts neither a v1 devices hierarchy nor cgroup2",
        )),
    }
}

/// Makes the kernel enforce `rules` (folded as [`Table::fold`] describes) for every process in
/// `cg`. Call it once per container cgroup, before its process runs untrusted code: on v2 a
/// second call adds a second program, and both must allow.
pub fn apply(h: &Hierarchies, cg: &Cgroup, rules: &[Rule]) -> Result<Enforcer, DeviceError> {
    let e = enforcer(h, cg)?;
    let table = Table::fold(rules);
    match &e {
        Enforcer::V1(dir) => v1::write_table(dir, &table)?,
        Enforcer::Bpf(dir) => attach_program(dir, &table)?,
    }
    tracing::debug!(enforcer = ?e, exceptions = table.exceptions.len(), "device rules applied");
    Ok(e)
}

/// Compiles, loads and attaches `table`'s program to the cgroup2 directory `dir`; the program
/// descriptor is closed on return (the cgroup keeps the program alive).
pub fn attach_program(dir: &std::path::Path, table: &Table) -> Result<(), DeviceError> {
    let prog = bpf::load(&program::compile(table))?;
    bpf::attach(dir, &prog)
}
