//! Accounting files kept open across scrapes and re-read with `pread` at offset 0 into one
//! reused buffer.
//!
//! cgroupfs files are kernfs seq_files: a read at offset 0 regenerates the content, so a kept
//! descriptor gives current values without the path walk, open and close each scrape (measured
//! in fusefs: 7 µs open+read+close vs 0.7 µs pread). Descriptors are bounded by the soft
//! `RLIMIT_NOFILE` (raised at start, see [`raise_nofile`]) minus a reserve for sockets; past that
//! budget, or on EMFILE/ENFILE, a file is opened, read and closed each time (counted, and
//! exported as `cgsight_agent_open_per_read_cgroups`). A cgroup's descriptors close when its
//! [`CgFiles`] is dropped (discovery no longer lists it) or a read says it is gone.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Descriptors left to the rest of the process (sockets, /proc reads, and in `cgsight daemon`
/// the FUSE views' own kept files): an eighth of the limit, at least this many.
const RESERVE: usize = 1024;
/// Scrapes a missing file is believed missing before it is looked for again (a v2 controller
/// enabled later adds files to existing cgroups).
const MISSING_SCRAPES: u64 = 8;
/// Largest file read (per-CPU files grow with the CPU count).
const MAX_LEN: usize = 1 << 22;

enum Slot {
    Unopened,
    Open(OwnedFd),
    /// Not there at this scrape number.
    Missing(u64),
    /// A limit file, read again only when inotify reports a write to it (every write(2) to a
    /// cgroup file is an IN_MODIFY): its last text, and a watch instead of a descriptor.
    Watched {
        wd: i32,
        text: String,
    },
}

/// The files of one cgroup, by the index the caller assigns to each file it reads.
pub struct CgFiles {
    slots: Vec<Slot>,
    kept: Arc<AtomicUsize>,
    /// The reader's inotify instance, to remove this cgroup's watches.
    inotify: Option<Arc<OwnedFd>>,
    /// Some file of this cgroup was read by open-per-read in the current scrape.
    pub per_read: bool,
}

impl Drop for CgFiles {
    fn drop(&mut self) {
        self.close_all();
    }
}

impl CgFiles {
    /// Descriptors this cgroup holds.
    pub fn open_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Open(_)))
            .count()
    }

    /// Closes every descriptor and removes every watch (the cgroup is gone, or about to be
    /// forgotten).
    pub fn close_all(&mut self) {
        let n = self.open_count();
        for s in &mut self.slots {
            if let (Slot::Watched { wd, .. }, Some(ino)) = (&*s, &self.inotify) {
                // SAFETY: plain syscall on our inotify descriptor; a stale wd is EINVAL.
                unsafe { libc::inotify_rm_watch(ino.as_raw_fd(), *wd) };
            }
            *s = Slot::Unopened;
        }
        self.kept.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The shared side: the read buffer, the descriptor budget, the scrape number, the watches.
pub struct Reader {
    buf: Vec<u8>,
    kept: Arc<AtomicUsize>,
    limit: usize,
    scrape: u64,
    path: Vec<u8>,
    /// None where inotify is unavailable: limit files are then kept open like the others.
    inotify: Option<Arc<OwnedFd>>,
    /// Watches written to before this scrape (drained at its start).
    changed: HashSet<i32>,
    /// The event queue overflowed: every watched file is read again this scrape.
    overflow: bool,
}

impl Reader {
    /// A reader that keeps at most `limit` descriptors open.
    pub fn with_limit(limit: usize) -> Self {
        // SAFETY: plain syscall; the result is checked before it is owned.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        // SAFETY: fd was just returned by inotify_init1 and is owned by nobody else.
        let inotify = (fd >= 0).then(|| Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }));
        Reader {
            buf: Vec::with_capacity(16 * 1024),
            kept: Arc::new(AtomicUsize::new(0)),
            limit,
            scrape: 0,
            path: Vec::with_capacity(256),
            inotify,
            changed: HashSet::new(),
            overflow: false,
        }
    }

    /// Raises `RLIMIT_NOFILE` and budgets all but a reserve of it ([`descriptor_budget`]).
    pub fn new() -> Self {
        Self::with_limit(descriptor_budget())
    }

    /// Descriptors kept open now, across all cgroups.
    pub fn kept(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    pub fn cgroup(&self, files: usize) -> CgFiles {
        CgFiles {
            slots: (0..files).map(|_| Slot::Unopened).collect(),
            kept: self.kept.clone(),
            inotify: self.inotify.clone(),
            per_read: false,
        }
    }

    /// Marks the start of a scrape, and collects which watched files were written since the
    /// last one.
    pub fn next_scrape(&mut self) {
        self.scrape += 1;
        self.changed.clear();
        self.overflow = false;
        let Some(ino) = &self.inotify else { return };
        let mut ev = [0u8; 4096];
        loop {
            // SAFETY: ev is valid for its length; the descriptor is non-blocking.
            let n = unsafe { libc::read(ino.as_raw_fd(), ev.as_mut_ptr().cast(), ev.len()) };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            // struct inotify_event: wd, mask, cookie, len, then `len` bytes of name.
            let mut at = 0;
            while let Some(h) = ev.get(at..at + 16).filter(|_| at + 16 <= n) {
                let word = |i: usize| h.get(i..i + 4).and_then(|b| b.try_into().ok());
                let (Some(wd), Some(mask), Some(len)) = (word(0), word(4), word(12)) else {
                    break;
                };
                if u32::from_ne_bytes(mask) & libc::IN_Q_OVERFLOW != 0 {
                    self.overflow = true;
                } else {
                    self.changed.insert(i32::from_ne_bytes(wd));
                }
                at += 16 + u32::from_ne_bytes(len) as usize;
            }
        }
    }

    /// As [`Self::read`], for a file that changes only when written (a limit): its text is
    /// read when first asked for and again after inotify reports a write, and no descriptor
    /// is kept for it. Without inotify, or past the watch limit, it is read as other files.
    pub fn read_watched<'a>(
        &'a mut self,
        cg: &'a mut CgFiles,
        idx: usize,
        dir: &Path,
        name: &str,
    ) -> io::Result<Option<&'a str>> {
        let Some(ino) = self.inotify.clone() else {
            return self.read(cg, idx, dir, name);
        };
        let Some(slot) = cg.slots.get_mut(idx) else {
            return Err(io::Error::other("file slot out of range"));
        };
        let reread = match slot {
            Slot::Watched { wd, .. } => self.overflow || self.changed.contains(wd),
            Slot::Open(_) => return self.read(cg, idx, dir, name),
            Slot::Missing(at) if self.scrape.saturating_sub(*at) < MISSING_SCRAPES => {
                return Ok(None)
            }
            Slot::Missing(_) | Slot::Unopened => {
                // Watch first: a write racing the read below is then seen next scrape.
                let wd = match watch(&ino, &mut self.path, dir, name) {
                    Ok(wd) => wd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        *slot = Slot::Missing(self.scrape);
                        return Ok(None);
                    }
                    // Out of watches (ENOSPC), say: kept open instead.
                    Err(_) => return self.read(cg, idx, dir, name),
                };
                *slot = Slot::Watched {
                    wd,
                    text: String::new(),
                };
                true
            }
        };
        if reread {
            let got = open(&mut self.path, dir, name)
                .and_then(|fd| pread_all(fd.as_raw_fd(), &mut self.buf));
            if let Err(e) = got {
                if is_gone(&e) {
                    cg.close_all();
                } else if let Some(s) = cg.slots.get_mut(idx) {
                    // Out of descriptors, say: no text to keep; the next scrape starts over
                    // rather than reuse an empty or stale one.
                    if let Slot::Watched { wd, .. } = s {
                        // SAFETY: plain syscall on our inotify descriptor.
                        unsafe { libc::inotify_rm_watch(ino.as_raw_fd(), *wd) };
                    }
                    *s = Slot::Unopened;
                }
                return Err(e);
            }
            let t = std::str::from_utf8(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some(Slot::Watched { text, .. }) = cg.slots.get_mut(idx) {
                text.clear();
                text.push_str(t);
            }
        }
        // The kept text itself, not a copy.
        match cg.slots.get(idx) {
            Some(Slot::Watched { text, .. }) => Ok(Some(text.as_str())),
            _ => Ok(None),
        }
    }

    /// The text of `dir/name` (slot `idx` of `cg`), `Ok(None)` when the file does not exist.
    /// ENODEV/ENOENT on a kept descriptor (the cgroup was removed) closes the cgroup's
    /// descriptors and is returned as the error, which callers treat as "gone".
    pub fn read<'a>(
        &'a mut self,
        cg: &'a mut CgFiles,
        idx: usize,
        dir: &Path,
        name: &str,
    ) -> io::Result<Option<&'a str>> {
        let Some(slot) = cg.slots.get_mut(idx) else {
            return Err(io::Error::other("file slot out of range"));
        };
        match slot {
            Slot::Open(fd) => {
                let fd = fd.as_raw_fd();
                if let Err(e) = pread_all(fd, &mut self.buf) {
                    if is_gone(&e) {
                        cg.close_all();
                    }
                    return Err(e);
                }
            }
            Slot::Missing(at) if self.scrape.saturating_sub(*at) < MISSING_SCRAPES => {
                return Ok(None)
            }
            _ => {
                let fd = match open(&mut self.path, dir, name) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        *slot = Slot::Missing(self.scrape);
                        return Ok(None);
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        cg.per_read = true;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                pread_all(fd.as_raw_fd(), &mut self.buf)?;
                if self.kept.load(Ordering::Relaxed) < self.limit {
                    self.kept.fetch_add(1, Ordering::Relaxed);
                    *slot = Slot::Open(fd);
                } else {
                    // Over budget: `fd` closes here; the next scrape opens it again.
                    *slot = Slot::Unopened;
                    cg.per_read = true;
                }
            }
        }
        std::str::from_utf8(&self.buf)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

/// Raises `RLIMIT_NOFILE` ([`raise_nofile`]) and returns how many descriptors the agent keeps
/// open at most (the limit less a reserve); public for the bench's floor, which keeps as many.
pub fn descriptor_budget() -> usize {
    let soft = raise_nofile();
    soft.saturating_sub(RESERVE.max(soft / 8))
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENOENT))
}

/// An IN_MODIFY watch on `dir/name`.
fn watch(ino: &OwnedFd, path: &mut Vec<u8>, dir: &Path, name: &str) -> io::Result<i32> {
    path.clear();
    path.extend_from_slice(dir.as_os_str().as_bytes());
    path.push(b'/');
    path.extend_from_slice(name.as_bytes());
    let c = CString::new(std::mem::take(path))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in a path: {e}")))?;
    // SAFETY: c is NUL-terminated and the descriptor ours.
    let wd = unsafe { libc::inotify_add_watch(ino.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
    *path = c.into_bytes();
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(wd)
}

fn open(path: &mut Vec<u8>, dir: &Path, name: &str) -> io::Result<OwnedFd> {
    path.clear();
    path.extend_from_slice(dir.as_os_str().as_bytes());
    path.push(b'/');
    path.extend_from_slice(name.as_bytes());
    let c = CString::new(std::mem::take(path))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in a path: {e}")))?;
    // SAFETY: c is NUL-terminated; the flags take no further arguments.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    *path = c.into_bytes();
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The whole file in one read at offset 0 (a seq_file read on at a later offset could mix two
/// generations); the buffer grows until one read fits.
fn pread_all(fd: i32, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut cap = buf.capacity().max(4096);
    loop {
        buf.clear();
        buf.reserve(cap);
        let room = buf.capacity();
        // SAFETY: the pointer is valid for `room` bytes of writes; set_len below covers only
        // what the kernel wrote.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), room, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: pread initialised the first n <= room bytes.
        unsafe { buf.set_len(n) };
        if n < room || room >= MAX_LEN {
            return Ok(());
        }
        cap = room * 2;
    }
}

/// The descriptor limit the agent asks for when it may raise the hard limit (root): room for
/// ~3000 cgroups' files kept open. Not more, because each kept kernfs file pins ~4.5 KiB of
/// kernel memory (its seq_file buffer), charged to the agent's memory cgroup: at this limit
/// ~290 MiB; past it files are read open-per-read.
const WANT_NOFILE: u64 = 1 << 16;

/// Raises `RLIMIT_NOFILE` (the hard limit too, to [`WANT_NOFILE`] within `fs.nr_open`, where
/// privileged; else the soft limit to the hard one); returns the soft limit in force.
fn raise_nofile() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let hard = r.rlim_max.max(WANT_NOFILE.min(nr_open));
    for max in [hard, r.rlim_max] {
        if r.rlim_cur >= max {
            break;
        }
        let want = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        // SAFETY: want is a valid rlimit. Raising the hard limit needs CAP_SYS_RESOURCE; without
        // it this fails and the next round asks for the current hard limit only.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = max;
            break;
        }
    }
    usize::try_from(r.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
