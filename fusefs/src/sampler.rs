//! The load sampler: every 5 s, the R + D thread count of each container read in the last
//! 10 minutes feeds its loadavg moving averages (the kernel's own cadence and formula).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::resolve::CgState;
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
pub fn sample_into(s: &CgState, step: bool) {
    let c = cgsight_cgroup::tasks::count(&s.cg);
    let mut l = s.load.lock().unwrap_or_else(|e| e.into_inner());
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
pub fn ensure_sampled(s: &CgState) {
    let needs_sample = !s.load.lock().unwrap_or_else(|e| e.into_inner()).sampled;
    if needs_sample {
        sample_into(s, false);
    }
}

struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

/// The running sampler thread.
pub struct Sampler {
    stop: Arc<Stop>,
    thread: JoinHandle<()>,
}

impl Sampler {
    pub fn start(engine: Arc<Engine>) -> io::Result<Sampler> {
        let stop = Arc::new(Stop {
            flag: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cgsight-load".into())
            .spawn(move || {
                let period = Duration::from_secs(loadavg::SAMPLE_SECS);
                let mut next = Instant::now() + period;
                loop {
                    let mut g = st.lock.lock().unwrap_or_else(|e| e.into_inner());
                    while !st.flag.load(Ordering::Relaxed) && Instant::now() < next {
                        let wait = next.saturating_duration_since(Instant::now());
                        g = st
                            .cv
                            .wait_timeout(g, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    drop(g);
                    if st.flag.load(Ordering::Relaxed) {
                        return;
                    }
                    engine.sample_loads();
                    next += period;
                }
            })?;
        Ok(Sampler { stop, thread })
    }

    /// Wakes the thread and waits for it to end.
    pub fn stop(self) {
        {
            // Under the lock: the thread is either before its check or waiting, never between.
            let _g = self.stop.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.stop.flag.store(true, Ordering::Relaxed);
        }
        self.stop.cv.notify_all();
        let _ = self.thread.join();
    }
}
