//! The hand-over server's /dev/fuse loop: worker threads that read requests from a handed
//! descriptor, answer them through [`dispatch`], and stop without dropping one.
//!
//! Which descriptor each worker reads decides what a crash costs. With FUSE_NOTIFY_RESEND
//! (Linux 6.9+) every worker reads the handed descriptor itself, which the holder keeps open:
//! what a killed server had read stays queued in the kernel until the successor asks for it
//! again. Without it each worker reads a clone: when the server dies its clones close and the
//! kernel fails what they held once (ECONNABORTED) instead of leaving the readers waiting.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::abi;
use crate::dispatch::{dispatch, NAME_MAX};
use crate::session::{clone_dev, notify_resend, InitState, READ_BUF};
use crate::tree::Tree;

/// Interrupts a worker's blocking read (the handler does nothing; no SA_RESTART).
const WAKE: libc::c_int = libc::SIGUSR1;

extern "C" fn on_wake(_: libc::c_int) {}

fn install_wake_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a handler that does nothing is async-signal-safe; sa is zeroed then set.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_wake as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(WAKE, &sa, std::ptr::null_mut());
        }
    });
}

/// Serving workers on one connection.
pub struct DevServer {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl DevServer {
    /// Starts `threads` workers on `fd`; with `resend`, asks the kernel to queue again what a
    /// predecessor had read and not answered (only where the kernel has RESEND).
    pub fn start(
        fd: OwnedFd,
        init: InitState,
        threads: usize,
        resend: bool,
        tree: Arc<Tree>,
    ) -> std::io::Result<DevServer> {
        install_wake_handler();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let mine = if init.has_resend() {
                fd.try_clone()?
            } else {
                clone_dev(fd.as_fd())?
            };
            let (tree, stop) = (tree.clone(), stop.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("cgsight-fuse-{i}"))
                    .spawn(move || work(&mine, &tree, &stop))?,
            );
        }
        if resend && init.has_resend() {
            if let Err(e) = notify_resend(fd.as_fd()) {
                tracing::warn!(error = %e, "FUSE_NOTIFY_RESEND failed");
            }
        }
        Ok(DevServer { stop, workers })
    }

    /// Stops every worker after the request it is answering, if any: none is left unanswered.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(5);
        // A worker may enter read() just after a wake-up: wake until all have left.
        while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < end {
            for w in self.workers.iter().filter(|w| !w.is_finished()) {
                // SAFETY: the thread is alive (not finished and not joined).
                unsafe { libc::pthread_kill(w.as_pthread_t(), WAKE) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for w in self.workers {
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }

    /// Whether every worker has ended (the connection is gone).
    pub fn is_finished(&self) -> bool {
        self.workers.iter().all(|w| w.is_finished())
    }
}

/// One worker: read, answer, repeat until stopped or the connection ends.
fn work(fd: &OwnedFd, tree: &Tree, stop: &AtomicBool) {
    let mut buf = vec![0u8; READ_BUF];
    let mut out = vec![0u8; abi::OUT_HEADER_LEN + crate::uring::PAYLOAD];
    while !stop.load(Ordering::SeqCst) {
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            // EINTR: woken to stop; ENOENT: the request was interrupted before we read it.
            Err(
                nix::errno::Errno::EINTR | nix::errno::Errno::ENOENT | nix::errno::Errno::EAGAIN,
            ) => continue,
            Err(nix::errno::Errno::ENODEV) => {
                tracing::debug!("FUSE connection ended");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading /dev/fuse");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(req) = buf.get(..n) else { continue };
        let Some(h) = abi::InHeader::parse(req) else {
            continue;
        };
        // No reply is wanted for these.
        if matches!(
            h.opcode,
            abi::FORGET | abi::BATCH_FORGET | abi::INTERRUPT | abi::INIT
        ) {
            continue;
        }
        let body = req.get(abi::IN_HEADER_LEN..).unwrap_or_default();
        let name = body.get(..body.len().min(NAME_MAX + 1)).unwrap_or_default();
        let (head, payload) = out.split_at_mut(abi::OUT_HEADER_LEN);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dispatch(tree, &h, body, name, payload)
        }))
        .unwrap_or(Err(libc::EIO));
        let (len, err) = match result {
            Ok(len) => (len, 0),
            Err(errno) => (0, -errno),
        };
        abi::put_out_header(head, (abi::OUT_HEADER_LEN + len) as u32, err, h.unique);
        match nix::unistd::write(fd, &out[..abi::OUT_HEADER_LEN + len]) {
            // ENOENT: the request was interrupted, or already answered after a RESEND.
            Ok(_) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => tracing::debug!(error = %e, unique = h.unique, "FUSE reply"),
        }
    }
}
