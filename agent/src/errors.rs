//! Scrape error accounting: `cgsight_scrape_errors_total{kind}` counts, and a warning per kind
//! at most once a minute.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cgsight_cgroup::Error as CgError;

/// Error kinds of `cgsight_scrape_errors_total`, all exported from the start at 0.
pub const ERROR_KINDS: &[&str] = &[
    "discovery",
    "cpu",
    "memory",
    "cpuset",
    "io",
    "pids",
    "oom",
    "pressure",
    "processes",
    "net_dev",
    "state",
];

/// Error counts and their rate-limited log.
pub struct Errors {
    pub counts: BTreeMap<&'static str, u64>,
    last_logged: HashMap<&'static str, Instant>,
}

impl Errors {
    pub fn new() -> Self {
        Errors {
            counts: ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
            last_logged: HashMap::new(),
        }
    }

    pub fn error(&mut self, kind: &'static str, path: &str, e: &dyn std::fmt::Display) {
        *self.counts.entry(kind).or_insert(0) += 1;
        let now = Instant::now();
        let due = self
            .last_logged
            .get(kind)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
        if due {
            self.last_logged.insert(kind, now);
            tracing::warn!(
                kind,
                cgroup = path,
                "scrape error (further ones of this kind are counted, not logged, for 60 s): {e}"
            );
        }
    }

    /// Reads a family, turning "gone" into None silently and other errors into a count.
    pub fn take<T>(&mut self, kind: &'static str, path: &str, r: Result<T, CgError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if e.is_gone() => None,
            Err(CgError::NoController(_)) => None,
            Err(e) => {
                self.error(kind, path, &e);
                None
            }
        }
    }
}

impl Default for Errors {
    fn default() -> Self {
        Self::new()
    }
}
