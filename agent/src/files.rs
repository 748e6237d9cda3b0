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
}

/// The files of one cgroup, by the index the caller assigns to each file it reads.
pub struct CgFiles {
    slots: Vec<Slot>,
    kept: Arc<AtomicUsize>,
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

    /// Closes every descriptor (the cgroup is gone, or about to be forgotten).
    pub fn close_all(&mut self) {
        let n = self.open_count();
        self.slots.iter_mut().for_each(|s| *s = Slot::Unopened);
        self.kept.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The shared side: the read buffer, the descriptor budget, the scrape number.
pub struct Reader {
    buf: Vec<u8>,
    kept: Arc<AtomicUsize>,
    limit: usize,
    scrape: u64,
    path: Vec<u8>,
}

impl Reader {
    /// A reader that keeps at most `limit` descriptors open.
    pub fn with_limit(limit: usize) -> Self {
        Reader {
            buf: Vec::with_capacity(16 * 1024),
            kept: Arc::new(AtomicUsize::new(0)),
            limit,
            scrape: 0,
            path: Vec::with_capacity(256),
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
            per_read: false,
        }
    }

    /// Marks the start of a scrape.
    pub fn next_scrape(&mut self) {
        self.scrape += 1;
    }

    /// The text of `dir/name` (slot `idx` of `cg`), `Ok(None)` when the file does not exist.
    /// ENODEV/ENOENT on a kept descriptor (the cgroup was removed) closes the cgroup's
    /// descriptors and is returned as the error, which callers treat as "gone".
    pub fn read(
        &mut self,
        cg: &mut CgFiles,
        idx: usize,
        dir: &Path,
        name: &str,
    ) -> io::Result<Option<&str>> {
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
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A real cgroup directory, removed on drop: in the cgroup2 mount where there is one, else
    /// in the v1 pids hierarchy (a legacy host), with three files of that layout. The first
    /// two take the numbers the budget test writes.
    struct TestCg(PathBuf, [&'static str; 3]);

    impl TestCg {
        fn new(tag: &str) -> Option<Self> {
            let h = cgsight_cgroup::Hierarchies::detect().ok()?;
            let (root, files) = match h.unified() {
                Some(u) => (
                    u.mount_point.clone(),
                    ["cgroup.max.depth", "cgroup.max.descendants", "cgroup.type"],
                ),
                None => (
                    h.mount_for(cgsight_cgroup::Controller::Pids)?
                        .mount_point
                        .clone(),
                    ["pids.max", "cgroup.clone_children", "notify_on_release"],
                ),
            };
            let dir = root.join(format!("cgsight-test-files-{tag}-{}", std::process::id()));
            std::fs::create_dir(&dir).ok()?;
            Some(TestCg(dir, files))
        }
    }

    impl Drop for TestCg {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// Descriptors of this process open on files under `dir` (other tests' files in this
    /// process do not count, so parallel tests cannot disturb the number).
    fn fds_under(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_removed_cgroups_descriptors_are_released() {
        let cg = TestCg::new("removed").expect("a cgroup mount and root");
        let files_of = cg.1;
        let mut r = Reader::with_limit(100);
        let mut files = r.cgroup(files_of.len() + 1);
        for (i, f) in files_of.iter().enumerate() {
            assert!(r.read(&mut files, i, &cg.0, f).unwrap().is_some());
        }
        assert_eq!(
            r.read(&mut files, files_of.len(), &cg.0, "no.such.file")
                .unwrap(),
            None
        );
        assert_eq!((r.kept(), fds_under(&cg.0)), (3, 3));
        std::fs::remove_dir(&cg.0).unwrap();
        // The kept descriptor now reads ENODEV: the cgroup is gone and all its files close.
        let e = r.read(&mut files, 0, &cg.0, files_of[0]).unwrap_err();
        assert!(is_gone(&e), "{e}");
        assert_eq!((r.kept(), fds_under(&cg.0)), (0, 0));
        // Dropping a cgroup's files (discovery no longer lists it) closes them too.
        let cg = TestCg::new("dropped").expect("cgroup");
        let mut files = r.cgroup(files_of.len());
        for (i, f) in files_of.iter().enumerate() {
            r.read(&mut files, i, &cg.0, f).unwrap();
        }
        assert_eq!((r.kept(), fds_under(&cg.0)), (3, 3));
        drop(files);
        assert_eq!((r.kept(), fds_under(&cg.0)), (0, 0));
    }

    #[test]
    fn past_the_descriptor_budget_files_are_read_per_open_with_the_same_values() {
        let cg = TestCg::new("budget").expect("cgroup");
        let files_of = cg.1;
        std::fs::write(cg.0.join(files_of[0]), "7").unwrap();
        std::fs::write(cg.0.join(files_of[1]), "1").unwrap();
        let mut r = Reader::with_limit(1);
        let mut files = r.cgroup(files_of.len());
        for scrape in 0..3 {
            r.next_scrape();
            files.per_read = false;
            for (i, f) in files_of.iter().enumerate() {
                let want = std::fs::read_to_string(cg.0.join(f)).unwrap();
                let got = r.read(&mut files, i, &cg.0, f).unwrap().map(str::to_owned);
                assert_eq!(got.as_deref(), Some(want.as_str()), "{f}, scrape {scrape}");
            }
            assert!(files.per_read);
            assert_eq!((r.kept(), fds_under(&cg.0)), (1, 1));
            // Values change under both kinds of slot and are read fresh.
            std::fs::write(cg.0.join(files_of[0]), format!("{}", 8 + scrape)).unwrap();
            // 0 or 1: the v1 file is a flag.
            std::fs::write(cg.0.join(files_of[1]), format!("{}", scrape % 2)).unwrap();
        }
    }
}
