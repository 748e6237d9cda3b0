//! OOM events: v1 `memory.oom_control`, v2 `memory.events`. No /dev/kmsg parsing needed.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::layout::Version;
use crate::parse::{self, join};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OomEvents {
    /// Processes killed by the OOM killer in this cgroup (and below, on v2).
    pub oom_kill: u64,
    /// v2: times the limit was hit and reclaim failed (`oom`).
    pub oom: Option<u64>,
    /// v1: the cgroup is currently under OOM (only with oom_kill_disable).
    pub under_oom: Option<bool>,
}

pub fn read(dir: &Path, v: Version) -> Result<OomEvents> {
    let mut ev = OomEvents::default();
    match v {
        Version::V1 => {
            let p = join(dir, "memory.oom_control");
            let text = parse::read(&p)?;
            for kv in parse::flat_keyed(&p, &text) {
                match kv? {
                    ("oom_kill", x) => ev.oom_kill = x,
                    ("under_oom", x) => ev.under_oom = Some(x != 0),
                    _ => {}
                }
            }
        }
        Version::V2 => {
            if let Some((e, _)) = read_events_v2(dir)? {
                ev = e;
            }
        }
    }
    Ok(ev)
}

/// v2 `memory.events` read once: the OOM events and `max` (the failcnt analogue). None when
/// the file is absent (the root cgroup).
pub fn read_events_v2(dir: &Path) -> Result<Option<(OomEvents, Option<u64>)>> {
    let p = join(dir, "memory.events");
    let Some(text) = parse::read_opt(&p)? else {
        return Ok(None);
    };
    let (mut ev, mut max) = (OomEvents::default(), None);
    for kv in parse::flat_keyed(&p, &text) {
        match kv? {
            ("oom_kill", x) => ev.oom_kill = x,
            ("oom", x) => ev.oom = Some(x),
            ("max", x) => max = Some(x),
            _ => {}
        }
    }
    Ok(Some((ev, max)))
}
