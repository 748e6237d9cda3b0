//! The agent's own families: scrape health, build information, and the `process_*` families
//! every Prometheus exporter serves about its own process.

use super::{Agent, AgentSource, Emit, Family};
use crate::exposition::Type::{Counter, Gauge};
use crate::process::Process;

/// The agent's families, in the order they are written after the containers'.
pub static AGENT: &[Family<AgentSource>] = &[
    Family {
        name: "cgsight_scrape_duration_seconds",
        kind: Gauge,
        unit: "seconds",
        labels: &[],
        help: "Time the agent spent collecting this scrape.",
        source: |a, emit| emit(&[], a.duration.into()),
    },
    Family {
        name: "cgsight_scrape_errors_total",
        kind: Counter,
        unit: "",
        labels: &["kind"],
        help: "Accounting files the agent failed to read or parse, by kind.",
        source: |a, emit| {
            for (k, v) in a.errors {
                emit(&[k], (*v).into());
            }
        },
    },
    Family {
        name: "cgsight_build_info",
        kind: Gauge,
        unit: "",
        labels: &["version"],
        help: "cgsight agent build information.",
        source: |a, emit| emit(&[a.version], 1u64.into()),
    },
    Family {
        name: "cgsight_agent_kept_open_files",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "Accounting files the agent keeps open across scrapes.",
        source: |a, emit| emit(&[], a.kept_files.into()),
    },
    Family {
        name: "cgsight_agent_open_per_read_cgroups",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "Cgroups whose files were opened per read this scrape because the descriptor limit was reached.",
        source: |a, emit| emit(&[], a.open_per_read_cgroups.into()),
    },
    Family {
        name: "process_cpu_seconds_total",
        kind: Counter,
        unit: "seconds",
        labels: &[],
        help: "CPU time (user and system) used by the agent process, in seconds.",
        source: |a, emit| process(a, emit, |p| Some(p.cpu_seconds)),
    },
    Family {
        name: "process_open_fds",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "File descriptors the agent process holds open.",
        source: |a, emit| process(a, emit, |p| p.open_fds.map(|n| n as f64)),
    },
    Family {
        name: "process_max_fds",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "The agent process's soft limit on open file descriptors.",
        source: |a, emit| process(a, emit, |p| p.max_fds),
    },
    Family {
        name: "process_virtual_memory_bytes",
        kind: Gauge,
        unit: "bytes",
        labels: &[],
        help: "Size of the agent process's virtual address space in bytes.",
        source: |a, emit| process(a, emit, |p| Some(p.virtual_bytes as f64)),
    },
    Family {
        name: "process_resident_memory_bytes",
        kind: Gauge,
        unit: "bytes",
        labels: &[],
        help: "Memory of the agent process resident in RAM, in bytes.",
        source: |a, emit| process(a, emit, |p| Some(p.resident_bytes as f64)),
    },
    Family {
        name: "process_start_time_seconds",
        kind: Gauge,
        unit: "seconds",
        labels: &[],
        help: "When the agent process started, in seconds since the unix epoch.",
        source: |a, emit| process(a, emit, |p| Some(p.start_time)),
    },
];

/// One unlabelled `process_*` sample, when the process was read and the value is known.
fn process(a: &Agent, emit: Emit, f: fn(&Process) -> Option<f64>) {
    if let Some(v) = a.process.and_then(f) {
        emit(&[], v.into());
    }
}
