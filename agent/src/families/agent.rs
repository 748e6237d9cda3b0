//! The agent's own families: scrape health and build information.

use super::{AgentSource, Family};
use crate::exposition::Type::{Counter, Gauge};

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
];
