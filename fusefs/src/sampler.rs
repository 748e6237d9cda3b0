//! The load sampler thread: every 5 s it has the engine step the load of each container read
//! in the last 10 minutes (the kernel's own cadence; the state and formula are in `load`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::views::loadavg;

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
