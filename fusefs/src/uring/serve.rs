//! One queue's serving loop: REGISTER its entries, then answer and COMMIT_AND_FETCH until
//! stopped, dispatching each request to the [`Tree`].

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types};

use super::{pin, Decision, Entry, Queue, DEPTH, INIT_WAIT, STOP};
use crate::metrics::FsMetrics;
use crate::tree::{Errno, Tree};
use crate::{abi, dispatch};

/// Every failed completion a queue saw: (queue, entry was registered, result). Only in the
/// crate's tests: the successor test reports the kernel's answer to a second REGISTER.
#[cfg(test)]
pub(super) static FAILED: std::sync::Mutex<Vec<(u16, bool, i32)>> =
    std::sync::Mutex::new(Vec::new());

/// Set by the successor test to an opcode: a queue that gets such a request keeps it
/// unanswered (a server that took a request and died before answering it), and records it
/// in [`HELD`]. 0: none.
#[cfg(test)]
pub(super) static HOLD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The requests held: (queue, opcode, the caller's pid).
#[cfg(test)]
pub(super) static HELD: std::sync::Mutex<Vec<(u16, u32, u32)>> = std::sync::Mutex::new(Vec::new());

/// Under [`HOLD`], never returns: the request in the entry stays taken and unanswered.
#[cfg(test)]
fn hold(qid: u16, e: &mut Entry) {
    let h = abi::InHeader::parse(e.header.bytes());
    if h.is_none_or(|h| h.opcode != HOLD.load(Ordering::SeqCst)) {
        return;
    }
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push((
        qid,
        h.map_or(0, |h| h.opcode),
        h.map_or(0, |h| h.pid),
    ));
    loop {
        std::thread::park();
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

pub(super) fn serve(
    mut q: Queue,
    decision: &Decision,
    fuse: RawFd,
    tree: &Tree,
    metrics: &FsMetrics,
) {
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
                #[cfg(test)]
                FAILED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((q.qid, registered, res));
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
                #[cfg(test)]
                hold(q.qid, &mut q.entries[i]);
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
    // The payload carries LOOKUP's name in and the reply out: copy the name aside first.
    let mut name = [0u8; dispatch::NAME_MAX + 1];
    let n = (in_len as usize).min(name.len()).min(payload.len());
    name[..n].copy_from_slice(&payload[..n]);
    let result = match &h {
        Some(h) => dispatch::dispatch(tree, h, &op_in, &name[..n], payload),
        None => Err(libc::EIO),
    };
    write_reply(hdr, h.map_or(0, |h| h.unique), result);
}
