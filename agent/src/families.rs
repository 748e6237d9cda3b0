//! The exported families as data: one [`Family`] per family (name, type, help, unit, label
//! names, value source) and a pure encoder from plain rows to the text exposition. Nothing here
//! reads the system; [`crate::collect`] gathers the rows, this module only turns them into text.
//!
//! Label *names* live only in the tables: a value source yields label values, which the encoder
//! pairs with the family's names, so a family cannot emit a label it does not declare.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cgsight_cgroup::cpu::{CpuLimits, CpuUsage, Throttling};
use cgsight_cgroup::io::IoDevice;
use cgsight_cgroup::memory::{MemCounters, Memory};
use cgsight_cgroup::pids::Pids;
use cgsight_cgroup::pressure::Pressure;

use crate::exposition::{Enc, Type, Val};
use crate::netdev::Iface;
use crate::process::Process;

mod agent;
mod container;
#[cfg(test)]
mod tests;

pub use agent::AGENT;
pub use container::CONTAINER;

/// One cgroup's readings in one scrape; None where the file was absent or unreadable.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub cpu: Option<CpuUsage>,
    pub limits: Option<CpuLimits>,
    pub throttling: Option<Throttling>,
    /// The memory readings and memory.stat's counters (`Memory::stat`'s map is left empty:
    /// the counters are parsed into fixed slots instead).
    pub mem: Option<(Memory, MemCounters)>,
    pub cpuset_count: Option<usize>,
    pub pids: Option<Pids>,
    pub procs: Option<usize>,
    pub io: Option<Vec<IoDevice>>,
    pub oom: Option<u64>,
    pub psi: Option<Pressure>,
    pub net: Option<Arc<Vec<Iface>>>,
}

/// One exported cgroup as the encoder sees it.
pub struct Row<'a> {
    /// Pre-escaped container labels: `id="…",name="…",image="…"` (plus pod labels on k8s).
    pub prefix: &'a str,
    pub stats: &'a Stats,
    /// Start time, seconds since the epoch.
    pub start: f64,
    /// The `runtime` label of `container_info`.
    pub runtime: &'static str,
    /// The host's root cgroup (the only one with filesystem usage).
    pub root: bool,
}

/// The root filesystem's device and statvfs numbers.
pub struct RootFs<'a> {
    pub device: &'a str,
    pub used: u64,
    pub total: u64,
}

/// Everything the container and machine families are computed from.
pub struct Scrape<'a> {
    pub rows: &'a [Row<'a>],
    /// Seconds since the epoch at the start of the scrape.
    pub now: f64,
    pub cpu_cores: u64,
    pub mem_total: u64,
    /// Block device names by (major, minor).
    pub devices: &'a HashMap<(u32, u32), String>,
    pub root_fs: Option<RootFs<'a>>,
}

/// The agent's own health, encoded after the containers.
pub struct Agent<'a> {
    /// Seconds spent collecting (and encoding) this scrape so far.
    pub duration: f64,
    pub errors: &'a BTreeMap<&'static str, u64>,
    pub version: &'a str,
    /// The agent process itself; None when /proc/self/stat is unreadable.
    pub process: Option<&'a Process>,
    /// Accounting-file descriptors kept open across scrapes.
    pub kept_files: u64,
    /// Cgroups with a file read by open-per-read this scrape (descriptor budget exhausted).
    pub open_per_read_cgroups: u64,
}

/// Receives one sample: the values of the family's labels (in table order) and the value.
pub type Emit<'e> = &'e mut dyn FnMut(&[&str], Val);

/// Where a container-table family's samples come from.
#[derive(Clone, Copy)]
pub enum Source {
    /// Zero or more series per row, after the row's container labels.
    Container(fn(&Scrape, &Row, Emit)),
    /// The root cgroup's row only, labelled with the root device; the family is left out when
    /// the root filesystem or the root cgroup is unknown.
    RootFs(fn(&RootFs) -> u64),
    /// One series about the machine, without container labels.
    Machine(fn(&Scrape) -> u64),
}

/// Where an agent-table family's samples come from.
pub type AgentSource = fn(&Agent, Emit);

/// One family: everything a dashboard depends on (name, type, unit, labels) in one row.
#[derive(Clone, Copy)]
pub struct Family<S> {
    pub name: &'static str,
    pub kind: Type,
    /// The unit of the value ("" for counts and ratios); informational, the text format has
    /// no UNIT line.
    pub unit: &'static str,
    /// Label names beyond the container labels, in output order.
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub source: S,
}

/// Appends the container and machine families, in table order.
pub fn encode(out: &mut String, s: &Scrape) {
    let mut e = Enc::new(out);
    for f in CONTAINER {
        match f.source {
            Source::Container(get) => {
                e.family(f.name, f.help, f.kind);
                for r in s.rows {
                    get(s, r, &mut |vals, v| {
                        sample(&mut e, r.prefix, f.labels, vals, v)
                    });
                }
            }
            Source::RootFs(get) => {
                let (Some(fs), Some(r)) = (&s.root_fs, s.rows.iter().find(|r| r.root)) else {
                    continue;
                };
                e.family(f.name, f.help, f.kind);
                sample(&mut e, r.prefix, f.labels, &[fs.device], get(fs).into());
            }
            Source::Machine(get) => {
                e.family(f.name, f.help, f.kind);
                sample(&mut e, "", f.labels, &[], get(s).into());
            }
        }
    }
}

/// Appends the agent's own families.
pub fn encode_agent(out: &mut String, a: &Agent) {
    let mut e = Enc::new(out);
    for f in AGENT {
        e.family(f.name, f.help, f.kind);
        (f.source)(a, &mut |vals, v| sample(&mut e, "", f.labels, vals, v));
    }
}

fn sample(e: &mut Enc, prefix: &str, names: &[&str], vals: &[&str], v: Val) {
    debug_assert_eq!(names.len(), vals.len(), "label values of {names:?}");
    match (names, vals) {
        ([], _) => e.sample(prefix, &[], v),
        ([a], [x, ..]) => e.sample(prefix, &[(a, x)], v),
        ([a, b], [x, y, ..]) => e.sample(prefix, &[(a, x), (b, y)], v),
        _ => {
            let pairs: Vec<(&str, &str)> =
                names.iter().copied().zip(vals.iter().copied()).collect();
            e.sample(prefix, &pairs, v)
        }
    }
}
