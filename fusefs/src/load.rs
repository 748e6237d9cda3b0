//! A container's load: its R + D thread counts and the loadavg moving averages they feed.

use std::sync::Mutex;

use cgsight_cgroup::Cgroup;

use crate::views::loadavg;

/// A container's load: the averages and the latest counts.
#[derive(Debug, Default)]
pub struct LoadState {
    pub loads: [u64; 3],
    pub running: u64,
    pub blocked: u64,
    pub total: u64,
    pub last_pid: u64,
    pub sampled: bool,
}

/// Updates a container's load state with a fresh count; `step` advances the averages (the
/// sampler does, every 5 s; a first read only fills the counts).
pub fn sample_into(cg: &Cgroup, load: &Mutex<LoadState>, step: bool) {
    let c = cgsight_cgroup::tasks::count(cg);
    let mut l = load.lock().unwrap_or_else(|e| e.into_inner());
    if step {
        loadavg::step(&mut l.loads, c.running + c.blocked);
    }
    l.running = c.running;
    l.blocked = c.blocked;
    l.total = c.total;
    l.last_pid = c.last_pid;
    l.sampled = true;
}

/// Fills the counts once if the sampler has not yet (a container's first read).
pub fn ensure_sampled(cg: &Cgroup, load: &Mutex<LoadState>) {
    let needs_sample = !load.lock().unwrap_or_else(|e| e.into_inner()).sampled;
    if needs_sample {
        sample_into(cg, load, false);
    }
}
