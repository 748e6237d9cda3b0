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

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::abi;
use crate::fs::{Errno, Tree};
use crate::metrics::FsMetrics;
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
                    .spawn(move || serve(q, &d, f.as_raw_fd(), &t, &m))?,
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

fn register_sqe(fuse: RawFd, q: &Queue, i: usize) -> squeue::Entry128 {
    let iov = q.entries[i].iov.as_ptr() as u64;
    let e = opcode::UringCmd80::new(types::Fd(fuse), abi::URING_CMD_REGISTER)
        .cmd(abi::uring_cmd(0, q.qid))
        .addr(Some(iov))
        .build()
        .user_data(i as u64);
    with_len(e, 2)
}

/// Sets `sqe->len` (the iovec count REGISTER wants), which the io-uring crate's builder does
/// not expose for URING_CMD.
fn with_len(e: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: Entry128 is a repr(C) 128-byte SQE; `len` is the u32 at byte offset 24 of
    // struct io_uring_sqe, and any bit pattern is a valid value for both types.
    unsafe {
        let mut raw: [u8; 128] = std::mem::transmute(e);
        raw[24..28].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute(raw)
    }
}

fn commit_sqe(fuse: RawFd, q: &Queue, i: usize) -> squeue::Entry128 {
    opcode::UringCmd80::new(types::Fd(fuse), abi::URING_CMD_COMMIT_AND_FETCH)
        .cmd(abi::uring_cmd(q.entries[i].commit_id, q.qid))
        .build()
        .user_data(i as u64)
}

fn push(q: &mut Queue, e: squeue::Entry128) -> bool {
    // SAFETY: every buffer the entry names (iovecs, header, payload) lives as long as the
    // queue, and the ring is dropped first.
    unsafe { q.ring.submission().push(&e).is_ok() }
}

fn serve(mut q: Queue, decision: &Decision, fuse: RawFd, tree: &Tree, metrics: &FsMetrics) {
    pin(q.qid as usize);
    if !decision.wait() {
        return;
    }
    let poll = opcode::PollAdd::new(types::Fd(q.stop.as_raw_fd()), libc::POLLIN as u32)
        .build()
        .user_data(STOP);
    let mut ok = push(&mut q, poll.into());
    for i in 0..q.entries.len() {
        let e = register_sqe(fuse, &q, i);
        ok &= push(&mut q, e);
    }
    if !ok {
        tracing::warn!(queue = q.qid, "io_uring submission queue full at start");
        return;
    }
    let started = Instant::now();
    let mut live = q.entries.len();
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(DEPTH + 1);
    while live > 0 {
        match q.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                // Leaving would strand this CPU's requests; wait and try again.
                tracing::warn!(queue = q.qid, error = %e, "io_uring wait failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        done.clear();
        done.extend(q.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &done {
            if ud == STOP {
                return;
            }
            let i = ud as usize;
            if i >= q.entries.len() {
                continue;
            }
            let registered = q.entries[i].registered;
            let sqe = if res == -libc::EAGAIN || res == -libc::EINTR {
                // EAGAIN at REGISTER: the kernel has not processed our INIT reply yet.
                if !registered && started.elapsed() > INIT_WAIT {
                    tracing::warn!(queue = q.qid, "FUSE never became ready for io_uring");
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
                if registered {
                    commit_sqe(fuse, &q, i)
                } else {
                    register_sqe(fuse, &q, i)
                }
            } else if res < 0 {
                let e = std::io::Error::from_raw_os_error(-res);
                if matches!(-res, libc::ENOTCONN | libc::ECONNABORTED | libc::ENODEV) {
                    tracing::debug!(queue = q.qid, error = %e, "FUSE connection ended");
                    return;
                }
                // A failed REGISTER makes the kernel fall back to /dev/fuse by itself; a
                // failed commit loses this entry only.
                tracing::warn!(queue = q.qid, entry = i, registered, error = %e, "FUSE io_uring entry dropped");
                live -= 1;
                continue;
            } else {
                q.entries[i].registered = true;
                let e = &mut q.entries[i];
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(e, tree)))
                    .is_err()
                {
                    fail(e, libc::EIO);
                }
                metrics.uring_requests.fetch_add(1, Ordering::Relaxed);
                commit_sqe(fuse, &q, i)
            };
            if !push(&mut q, sqe) {
                // Cannot happen (one SQE per entry at most); counted as a lost entry.
                tracing::warn!(queue = q.qid, "io_uring submission queue full");
                live -= 1;
            }
        }
    }
}

/// Replaces the reply of an entry with an error (after a panic in a view).
fn fail(e: &mut Entry, errno: Errno) {
    let hdr = e.header.bytes();
    let unique = abi::InHeader::parse(hdr).map_or(0, |h| h.unique);
    write_reply(hdr, unique, Err(errno));
}

/// The out header and payload size of a reply whose payload (if any) is already in place.
fn write_reply(hdr: &mut [u8], unique: u64, result: Result<usize, Errno>) {
    let (len, err) = match result {
        Ok(n) => (n, 0),
        Err(errno) => (0, -errno),
    };
    abi::put_out_header(hdr, (16 + len) as u32, err, unique);
    abi::set_ring_payload(hdr, len as u32);
}

/// Decodes the request in an entry, runs it, and writes the reply in place.
fn answer(e: &mut Entry, tree: &Tree) {
    let hdr = e.header.bytes();
    let (commit_id, in_len) = abi::ring_ent(hdr).unwrap_or((0, 0));
    e.commit_id = commit_id;
    let mut op_in = [0u8; 128];
    op_in.copy_from_slice(&hdr[abi::URING_OP_IN..abi::URING_OP_IN + 128]);
    let h = abi::InHeader::parse(hdr);
    let payload = e.payload.bytes();
    let result = match &h {
        Some(h) => dispatch(tree, h, &op_in, payload, in_len as usize),
        None => Err(libc::EIO),
    };
    write_reply(hdr, h.map_or(0, |h| h.unique), result);
}

/// One request → the reply's payload length, or an errno. Mirrors the fuser adapter in fs.rs.
fn dispatch(
    tree: &Tree,
    h: &abi::InHeader,
    op_in: &[u8],
    pay: &mut [u8],
    in_len: usize,
) -> Result<usize, Errno> {
    let bad = libc::EIO;
    match h.opcode {
        abi::LOOKUP => {
            let raw = &pay[..in_len.min(pay.len())];
            let name = raw.split(|&b| b == 0).next().unwrap_or_default();
            if name.len() > 255 {
                return Err(libc::ENAMETOOLONG);
            }
            let mut buf = [0u8; 255];
            buf[..name.len()].copy_from_slice(name);
            let (ino, ttl) = tree.lookup(h.nodeid, &buf[..name.len()], h.pid)?;
            abi::put_entry_out(pay, &tree.attr(ino)?, ttl.as_secs());
            Ok(abi::ENTRY_OUT_LEN)
        }
        abi::GETATTR => {
            let (a, ttl) = tree.getattr(h.nodeid)?;
            abi::put_attr_out(pay, &a, ttl.as_secs());
            Ok(abi::ATTR_OUT_LEN)
        }
        abi::OPEN => {
            let fh = tree.open(h.nodeid, abi::open_in(op_in).ok_or(bad)?)?;
            abi::put_open_out(pay, fh, abi::FOPEN_DIRECT_IO);
            Ok(abi::OPEN_OUT_LEN)
        }
        abi::READ => {
            let (fh, offset, size) = abi::read_in(op_in).ok_or(bad)?;
            let (data, r) = tree.read(h.nodeid, fh, offset, size, h.pid)?;
            let n = r.len().min(pay.len());
            pay[..n].copy_from_slice(&data[r.start..r.start + n]);
            Ok(n)
        }
        abi::RELEASE => {
            tree.release(abi::release_in(op_in).ok_or(bad)?);
            Ok(0)
        }
        abi::OPENDIR => {
            if !Tree::is_dir(h.nodeid) {
                return Err(libc::ENOTDIR);
            }
            abi::put_open_out(pay, 0, 0);
            Ok(abi::OPEN_OUT_LEN)
        }
        abi::READDIR => {
            let (_, offset, size) = abi::read_in(op_in).ok_or(bad)?;
            let entries = tree.dir_entries(h.nodeid, h.pid)?;
            let room = (size as usize).min(pay.len());
            let mut out = Vec::with_capacity(room.min(4096));
            let skip = usize::try_from(offset).unwrap_or(usize::MAX);
            for (i, (ino, dir, name)) in entries.iter().enumerate().skip(skip) {
                let dtype = if *dir { libc::DT_DIR } else { libc::DT_REG } as u32;
                if !abi::push_dirent(&mut out, room, *ino, (i + 1) as u64, dtype, name.as_bytes()) {
                    break;
                }
            }
            pay[..out.len()].copy_from_slice(&out);
            Ok(out.len())
        }
        abi::RELEASEDIR | abi::DESTROY => Ok(0),
        abi::STATFS => {
            abi::put_statfs_out(pay);
            Ok(abi::STATFS_OUT_LEN)
        }
        // Like procfs, not a terminal (Python's open() asks isatty()).
        abi::IOCTL => Err(libc::ENOTTY),
        // FLUSH, xattrs, access, lseek, …: ENOSYS once and the kernel stops asking.
        _ => Err(libc::ENOSYS),
    }
}
