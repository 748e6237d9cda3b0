//! FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`, module parameter
//! `fuse.enable_uring`): one ring and one server thread per possible CPU, pinned to it.
//!
//! Why: the kernel queues a request on the ring of the CPU its caller runs on, so the reader,
//! the server thread and the reply stay on one CPU. Over /dev/fuse any idle worker is woken,
//! often on the other CPU, and on a small VM each such cross-CPU wakeup (a halted vCPU to
//! wake) costs more than the view itself. It also takes one syscall per request (commit the
//! reply and fetch the next) instead of a read and a write.
//!
//! The rings are made before the mount, so INIT asks the kernel for io_uring only when they
//! exist; fuser keeps serving /dev/fuse, which still carries FORGET and INTERRUPT, and all of
//! the traffic if registration fails (the kernel then falls back by itself).
//!
//! This module makes the rings and starts their threads; [`serve`] is the per-queue loop.

mod serve;
#[cfg(test)]
mod successor_tests;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use io_uring::{cqueue, squeue, IoUring};

use crate::abi;
use crate::metrics::FsMetrics;
use crate::tree::Tree;
use crate::IoUringMode;

/// Bytes per request payload: the largest read the kernel sends (max_pages pages) and the
/// largest reply. INIT sets max_write and max_readahead to this so the kernel's minimum
/// payload size (max of those and max_pages pages) is exactly this.
pub const PAYLOAD: usize = 128 * 1024;
/// Ring entries per queue: requests a CPU can have in flight at once (an open racing the
/// asynchronous release of the previous file needs two).
const DEPTH: usize = 4;
const STOP: u64 = u64::MAX;
const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
/// How long a queue retries REGISTER while the kernel has not seen our INIT reply yet.
const INIT_WAIT: Duration = Duration::from_secs(10);

/// A page-aligned zeroed buffer whose address the kernel keeps (registered once).
struct Buf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is owned memory; only its queue's thread touches it.
unsafe impl Send for Buf {}

impl Buf {
    fn new(len: usize) -> Option<Buf> {
        let layout = Layout::from_size_align(len, 4096).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Buf { ptr, len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live allocation of len bytes, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr, Layout::from_size_align_unchecked(self.len, 4096)) }
    }
}

struct Entry {
    header: Buf,
    payload: Buf,
    /// Read by the kernel at REGISTER: header and payload.
    iov: Box<[libc::iovec; 2]>,
    commit_id: u64,
    registered: bool,
}

// SAFETY: the iovecs point into the entry's own buffers; only its queue's thread uses them.
unsafe impl Send for Entry {}

struct Queue {
    /// First field: dropped (closing the ring, cancelling its commands) before the buffers.
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    qid: u16,
    stop: OwnedFd,
    entries: Vec<Entry>,
}

/// Rings made before the mount; `split` gives the INIT side and the serving side.
pub struct Prepared {
    queues: Vec<Queue>,
}

/// The queues, to start once the connection exists.
pub struct Launcher {
    queues: Vec<Queue>,
    decision: Arc<Decision>,
}

/// Whether the kernel agreed to io_uring at INIT: none yet, yes, or no.
#[derive(Default)]
struct Decision {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl Decision {
    fn set(&self, go: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = Some(go);
        }
        self.cv.notify_all();
    }

    fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(go) = *s {
                return go;
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Held by the filesystem until INIT: starts the queues, or lets them go.
pub struct Pending(Arc<Decision>);

impl Pending {
    pub fn start(self) {
        self.0.set(true);
    }

    pub fn decline(self, why: &str) {
        tracing::info!("FUSE over io_uring not used: {why}");
        self.0.set(false);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Never reached INIT (a failed mount): the queues must not wait forever.
        self.0.set(false);
    }
}

/// The serving queues; `stop` ends them.
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    stops: Vec<OwnedFd>,
    decision: Arc<Decision>,
}

impl Running {
    pub fn stop(self) {
        // Threads still waiting for INIT (it never came) end too.
        self.decision.set(false);
        for fd in &self.stops {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes from a live buffer to an eventfd we own.
            unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Queues the kernel expects: one per possible CPU, numbered like them.
fn possible_cpus() -> Option<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?;
    let list = cgsight_cgroup::CpuList::parse(s.trim())?;
    list.cpus().iter().max().map(|&m| m as usize + 1)
}

/// Whether to serve over io_uring, and the rings if so. `Auto` uses it when the kernel has it
/// switched on; `On` switches it on (the module parameter is global, but each FUSE server still
/// opts in at INIT) and fails when the kernel lacks it.
pub fn prepare(mode: IoUringMode) -> Result<Option<Prepared>, String> {
    if mode == IoUringMode::Off {
        return Ok(None);
    }
    match std::fs::read_to_string(PARAM) {
        Err(_) if mode == IoUringMode::On => {
            return Err(format!(
                "this kernel has no FUSE over io_uring ({PARAM} is missing: it needs Linux \
                 6.14+ built with CONFIG_FUSE_IO_URING); use --io-uring auto or off"
            ))
        }
        Err(_) => return Ok(None),
        Ok(v) if v.trim() == "Y" => {}
        Ok(_) if mode == IoUringMode::On => {
            std::fs::write(PARAM, "Y")
                .map_err(|e| format!("switching on FUSE over io_uring ({PARAM}): {e}"))?;
            tracing::info!("switched on FUSE over io_uring ({PARAM} = Y)");
        }
        Ok(_) => {
            tracing::debug!("FUSE over io_uring is off in this kernel ({PARAM} = N)");
            return Ok(None);
        }
    }
    let n = possible_cpus().ok_or("cannot read /sys/devices/system/cpu/possible")?;
    let mut queues = Vec::with_capacity(n);
    for qid in 0..n {
        match make_queue(qid) {
            Ok(q) => queues.push(q),
            Err(e) if mode == IoUringMode::On => return Err(e),
            Err(e) => {
                tracing::info!("FUSE over io_uring not used: {e}");
                return Ok(None);
            }
        }
    }
    Ok(Some(Prepared { queues }))
}

fn make_queue(qid: usize) -> Result<Queue, String> {
    let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .build((DEPTH + 1).next_power_of_two() as u32)
        .map_err(|e| format!("creating an io_uring: {e}"))?;
    // SAFETY: eventfd returns a new descriptor we then own, or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: efd is a fresh, valid descriptor owned by nobody else.
    let stop = unsafe { OwnedFd::from_raw_fd(efd) };
    let mut entries = Vec::with_capacity(DEPTH);
    for _ in 0..DEPTH {
        let (Some(mut header), Some(mut payload)) =
            (Buf::new(abi::URING_HEADER_LEN), Buf::new(PAYLOAD))
        else {
            return Err("out of memory for io_uring buffers".into());
        };
        let iov = Box::new([
            libc::iovec {
                iov_base: header.bytes().as_mut_ptr().cast(),
                iov_len: abi::URING_HEADER_LEN,
            },
            libc::iovec {
                iov_base: payload.bytes().as_mut_ptr().cast(),
                iov_len: PAYLOAD,
            },
        ]);
        entries.push(Entry {
            header,
            payload,
            iov,
            commit_id: 0,
            registered: false,
        });
    }
    Ok(Queue {
        ring,
        qid: qid as u16,
        stop,
        entries,
    })
}

impl Prepared {
    pub fn split(self) -> (Pending, Launcher) {
        let decision = Arc::new(Decision::default());
        (
            Pending(decision.clone()),
            Launcher {
                queues: self.queues,
                decision,
            },
        )
    }
}

impl Launcher {
    /// Starts one thread per queue on the mounted connection `fuse` (a /dev/fuse descriptor).
    /// The threads wait until INIT decides (through the `Pending`).
    pub fn launch(
        self,
        fuse: OwnedFd,
        tree: Arc<Tree>,
        metrics: Arc<FsMetrics>,
    ) -> std::io::Result<Running> {
        let decision = self.decision;
        let fuse = Arc::new(fuse);
        let mut threads = Vec::new();
        let mut stops = Vec::new();
        for q in self.queues {
            stops.push(q.stop.try_clone()?);
            let (d, f, t, m) = (
                decision.clone(),
                fuse.clone(),
                tree.clone(),
                metrics.clone(),
            );
            let name = format!("cgsight-ring{}", q.qid);
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || serve::serve(q, &d, f.as_raw_fd(), &t, &m))?,
            );
        }
        Ok(Running {
            threads,
            stops,
            decision,
        })
    }
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            // An offline CPU: its queue serves from anywhere (the kernel sends it nothing).
            tracing::debug!(cpu, "could not pin the io_uring queue thread");
        }
    }
}
