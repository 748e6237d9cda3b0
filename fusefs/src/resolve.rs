//! From a FUSE caller (a host thread id) to the container whose view it gets.
//!
//! The container is the init of the caller's pid namespace and that init's cgroups, with a
//! trailing `/init.scope` stripped. Results are cached by the pid namespace's inode and held
//! with a pidfd on the init: while the init lives, its namespace lives, so the inode cannot have
//! been reused; a dead init drops the entry. A caller in our own (host) pid namespace gets its
//! own cgroups. A caller that is gone (or pid 0: not visible to us) gets the host files.
//!
//! In front of that sits a per-thread cache (tid → reader), held with a pidfd of the thread:
//! a hit costs one pidfd_send_signal instead of a stat of `/proc/<tid>/ns/pid` (a procfs path
//! walk, ~6 µs here) plus, for host-namespace readers, a parse of `/proc/<tid>/cgroup`. A thread
//! never changes pid namespace, and a dead thread's pidfd fails the check even if its tid was
//! reused, so only the cgroup membership can go stale: it is trusted for `MEMBERSHIP_TTL`, the
//! same as the per-namespace cache.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cgsight_cgroup::{Cgroup, Hierarchies, Membership};

use crate::cgfiles::CgFiles;
use crate::load::LoadState;
use crate::views::stat::CpuTicks;

/// How long a cached init's cgroup membership is trusted before /proc/<init>/cgroup is re-read.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(1);
/// How long limits (memory/swap limit, quota, cpuset) of a cgroup are cached.
pub const LIMITS_TTL: Duration = Duration::from_secs(1);

/// Limits of a container's cgroup, effective over its ancestors.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub mem: Option<u64>,
    pub swap: Option<u64>,
    pub quota: Option<f64>,
    pub cpuset: Vec<u32>,
}

/// Everything kept per container cgroup.
pub struct CgState {
    pub cg: Cgroup,
    /// Usage files kept open (read on every request).
    pub files: CgFiles,
    pub limits: Mutex<Option<(Instant, Arc<Limits>)>>,
    pub stat_last: Mutex<Vec<CpuTicks>>,
    pub load: Mutex<LoadState>,
    /// Seconds (on `Resolver::epoch`) of the last read: the sampler skips idle containers.
    pub last_read: AtomicU64,
    /// Last time a failure was logged (seconds on the epoch + 1; 0 = never).
    pub last_logged: AtomicU64,
}

impl CgState {
    pub fn new(cg: Cgroup) -> CgState {
        CgState {
            cg,
            files: CgFiles::default(),
            limits: Mutex::new(None),
            stat_last: Mutex::new(Vec::new()),
            load: Mutex::new(LoadState::default()),
            last_read: AtomicU64::new(0),
            last_logged: AtomicU64::new(0),
        }
    }
}

/// Who is reading.
pub enum Caller {
    /// Not resolvable (pid 0 or gone): the host files.
    Host,
    /// We are out of file descriptors (EMFILE/ENFILE), so the caller could not be resolved.
    NoFds,
    Reader(Reader),
}

/// Why a caller was not resolved.
enum Miss {
    /// Gone, or not something we can place: the host files.
    Gone,
    /// Out of descriptors: worth freeing some and trying again.
    NoFds,
}

fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A failed /proc read: exhaustion or (anything else) a caller we cannot place.
fn miss(e: cgsight_cgroup::Error) -> Miss {
    if e.is_fd_exhaustion() {
        Miss::NoFds
    } else {
        Miss::Gone
    }
}

pub struct Reader {
    /// The caller shares our pid namespace: uptime/loadavg are the host's.
    pub host_pidns: bool,
    /// Start of the container's init in clock ticks since boot (0 for host-namespace readers).
    pub start_ticks: u64,
    pub cg: Arc<CgState>,
}

struct TidEntry {
    pidfd: OwnedFd,
    host_pidns: bool,
    start_ticks: u64,
    cg: Arc<CgState>,
    checked: Instant,
}

struct NsEntry {
    pidfd: OwnedFd,
    init: i32,
    start_ticks: u64,
    cg: Arc<CgState>,
    checked: Instant,
}

pub struct Resolver {
    pub h: Hierarchies,
    self_pidns: u64,
    by_ns: RwLock<HashMap<u64, NsEntry>>,
    by_tid: RwLock<HashMap<u32, TidEntry>>,
    /// Most threads cached at once: each holds a pidfd, so this stays well under RLIMIT_NOFILE.
    max_tids: usize,
    cgroups: RwLock<HashMap<String, Arc<CgState>>>,
    pub epoch: Instant,
}

fn pidns_ino(pid: u32) -> Option<u64> {
    let mut buf = itoa_path(pid);
    buf.push_str("/ns/pid");
    std::fs::metadata(&buf).ok().map(|m| m.ino())
}

fn itoa_path(pid: u32) -> String {
    let mut s = String::with_capacity(24);
    s.push_str("/proc/");
    s.push_str(&pid.to_string());
    s
}

/// PIDFD_THREAD (Linux 6.9): a pidfd for any thread, not only a thread-group leader.
const PIDFD_THREAD: libc::c_int = libc::O_EXCL;

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    pidfd_open_flags(pid, 0)
}

fn pidfd_open_flags(pid: i32, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_alive(fd: &OwnedFd) -> bool {
    // SAFETY: signal 0 only checks that the process exists; no memory is passed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

impl Resolver {
    pub fn new(h: Hierarchies) -> Resolver {
        Resolver {
            h,
            self_pidns: pidns_ino(std::process::id()).unwrap_or(0),
            by_ns: RwLock::new(HashMap::new()),
            by_tid: RwLock::new(HashMap::new()),
            max_tids: max_cached_tids(),
            cgroups: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    pub fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    pub fn resolve(&self, pid: u32) -> Caller {
        if pid == 0 {
            return Caller::Host;
        }
        let r = match self.cached(pid) {
            Some(r) => Ok(r),
            None => self.resolve_uncached(pid),
        };
        match r {
            Ok(r) => {
                r.cg.last_read.store(self.now_secs(), Ordering::Relaxed);
                Caller::Reader(r)
            }
            Err(Miss::Gone) => Caller::Host,
            Err(Miss::NoFds) => Caller::NoFds,
        }
    }

    fn cached(&self, tid: u32) -> Option<Reader> {
        let map = self.by_tid.read().unwrap_or_else(|e| e.into_inner());
        let e = map.get(&tid)?;
        if e.checked.elapsed() >= MEMBERSHIP_TTL || !pidfd_alive(&e.pidfd) {
            return None;
        }
        Some(Reader {
            host_pidns: e.host_pidns,
            start_ticks: e.start_ticks,
            cg: e.cg.clone(),
        })
    }

    fn resolve_uncached(&self, tid: u32) -> Result<Reader, Miss> {
        // The pidfd first: if the tid is reused after this, the resolution below may describe
        // the new thread, but the cached entry then fails its liveness check (never the other
        // way round). Without PIDFD_THREAD (kernel < 6.9) only leaders get one; others are
        // simply not cached.
        let pidfd = pidfd_open_flags(tid as i32, PIDFD_THREAD).or_else(|_| pidfd_open(tid as i32));
        if matches!(&pidfd, Err(e) if is_fd_exhaustion(e)) {
            return Err(Miss::NoFds);
        }
        let ns = pidns_ino(tid).ok_or(Miss::Gone)?;
        let r = if ns == self.self_pidns {
            self.own_cgroup(tid)
        } else {
            self.container(tid, ns)
        }?;
        if let Ok(pidfd) = pidfd {
            let mut map = self.by_tid.write().unwrap_or_else(|e| e.into_inner());
            if map.len() >= self.max_tids {
                map.retain(|_, e| e.checked.elapsed() < MEMBERSHIP_TTL);
            }
            if map.len() < self.max_tids {
                map.insert(
                    tid,
                    TidEntry {
                        pidfd,
                        host_pidns: r.host_pidns,
                        start_ticks: r.start_ticks,
                        cg: r.cg.clone(),
                        checked: Instant::now(),
                    },
                );
            }
        }
        Ok(r)
    }

    fn own_cgroup(&self, pid: u32) -> Result<Reader, Miss> {
        let m = Membership::of_pid(pid as i32)
            .map_err(miss)?
            .strip_init_scope();
        Ok(Reader {
            host_pidns: true,
            start_ticks: 0,
            cg: self.state_for(&m),
        })
    }

    fn container(&self, pid: u32, ns: u64) -> Result<Reader, Miss> {
        {
            let map = self.by_ns.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get(&ns) {
                if pidfd_alive(&e.pidfd) && e.checked.elapsed() < MEMBERSHIP_TTL {
                    return Ok(Reader {
                        host_pidns: false,
                        start_ticks: e.start_ticks,
                        cg: e.cg.clone(),
                    });
                }
            }
        }
        // Miss, dead init, or membership due for a re-check: resolve from scratch.
        let init = cgsight_cgroup::pidns_init(pid as i32).map_err(miss)?;
        let pidfd = pidfd_open(init).map_err(|e| {
            if is_fd_exhaustion(&e) {
                Miss::NoFds
            } else {
                Miss::Gone
            }
        })?;
        // The pid could have been reused between the walk and pidfd_open: the pidfd's process
        // must still be in the caller's namespace.
        if pidns_ino(init as u32) != Some(ns) {
            return Err(Miss::Gone);
        }
        let start_ticks = cgsight_cgroup::start_ticks(init).map_err(miss)?;
        let m = Membership::of_pid(init).map_err(miss)?.strip_init_scope();
        let cg = self.state_for(&m);
        let mut map = self.by_ns.write().unwrap_or_else(|e| e.into_inner());
        map.insert(
            ns,
            NsEntry {
                pidfd,
                init,
                start_ticks,
                cg: cg.clone(),
                checked: Instant::now(),
            },
        );
        Ok(Reader {
            host_pidns: false,
            start_ticks,
            cg,
        })
    }

    fn state_for(&self, m: &Membership) -> Arc<CgState> {
        let mut key = String::new();
        for e in &m.entries {
            key.push_str(&e.hierarchy_id.to_string());
            key.push(':');
            key.push_str(&e.path);
            key.push('\n');
        }
        if let Some(s) = self
            .cgroups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return s.clone();
        }
        let mut map = self.cgroups.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| Arc::new(CgState::new(Cgroup::from_membership(&self.h, m))))
            .clone()
    }

    /// Containers read within `within`, for the load sampler.
    pub fn recently_read(&self, within: Duration) -> Vec<Arc<CgState>> {
        let now = self.now_secs();
        let map = self.cgroups.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter(|s| now.saturating_sub(s.last_read.load(Ordering::Relaxed)) <= within.as_secs())
            .cloned()
            .collect()
    }

    /// Drops entries of dead inits, of removed cgroups and of cgroups nobody has read for
    /// `idle`. A removed cgroup's kept files are closed at once, even while a cached thread
    /// still points at it: a short-lived container must not pin descriptors for `idle`.
    pub fn prune(&self, idle: Duration) {
        // Expired thread entries would be re-resolved anyway; dropping them frees their pidfds.
        self.by_tid
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.checked.elapsed() < MEMBERSHIP_TTL);
        self.by_ns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.init > 0 && pidfd_alive(&e.pidfd));
        let now = self.now_secs();
        self.cgroups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| {
                // Any of its directories gone: no process can have this membership any more.
                if s.cg.dirs.values().any(|d| !d.dir.is_dir()) {
                    s.files.close_all();
                    return false;
                }
                Arc::strong_count(s) > 1
                    || now.saturating_sub(s.last_read.load(Ordering::Relaxed)) <= idle.as_secs()
            });
    }

    /// Frees descriptors after EMFILE/ENFILE: every cached thread pidfd (a cache only) and the
    /// kept files of the least recently read half of the cgroups (reopened on their next read).
    /// Returns how many cgroups had their files closed.
    pub fn evict_lru(&self) -> usize {
        self.by_tid
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut all: Vec<Arc<CgState>> = self
            .cgroups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|s| s.last_read.load(Ordering::Relaxed));
        let n = all.len().div_ceil(2);
        for s in all.iter().take(n) {
            s.files.close_all();
        }
        n
    }

    #[cfg(test)]
    fn cached_cgroups(&self) -> usize {
        self.cgroups.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A quarter of the soft RLIMIT_NOFILE, at most 4096: the thread cache's pidfds must leave
/// room for the FUSE fds, cgroup files and everything else the process opens.
fn max_cached_tids() -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 256;
    }
    (rl.rlim_cur / 4).min(4096) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn gettid() -> u32 {
        // SAFETY: gettid has no arguments and cannot fail.
        unsafe { libc::gettid() as u32 }
    }

    /// Kills and reaps the child and removes its cgroup, on success and failure alike.
    struct Child(std::process::Child, std::path::PathBuf);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir(&self.1);
        }
    }

    #[test]
    fn a_removed_cgroup_closes_its_files_at_the_next_prune() {
        let h = Hierarchies::detect().expect("cgroup hierarchies");
        let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/memory"
        };
        let dir = Path::new(root).join(format!("cgsight-test-prune-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            eprintln!("skipped: cannot create a cgroup under {root} (needs root)");
            return;
        }
        let child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep");
        let mut child = Child(child, dir.clone());
        std::fs::write(dir.join("cgroup.procs"), child.0.id().to_string()).expect("move");
        let r = Resolver::new(h);
        let Caller::Reader(reader) = r.resolve(child.0.id()) else {
            panic!("a live child resolves");
        };
        let mem = reader
            .cg
            .cg
            .dir(cgsight_cgroup::Controller::Memory)
            .expect("memory dir");
        let name = if mem.version == cgsight_cgroup::Version::V2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        assert!(reader
            .cg
            .files
            .read(&mem.dir, name)
            .expect("read")
            .is_some());
        assert_eq!(reader.cg.files.open_count(), 1);
        // An idle window far longer than the test: only removal can drop the entry.
        let idle = Duration::from_secs(3600);
        r.prune(idle);
        assert_eq!(r.cached_cgroups(), 1, "a live cgroup stays cached");
        let _ = child.0.kill();
        let _ = child.0.wait();
        std::fs::remove_dir(&dir).expect("rmdir the emptied cgroup");
        r.prune(idle);
        assert_eq!(r.cached_cgroups(), 0, "a removed cgroup is dropped");
        assert_eq!(reader.cg.files.open_count(), 0, "and its files closed");
    }

    #[test]
    fn a_thread_is_cached_until_it_exits() {
        let h = Hierarchies::detect().expect("cgroup hierarchies");
        let r = Resolver::new(h);
        // Per-thread pidfds need PIDFD_THREAD (Linux 6.9); older kernels cache leaders only.
        let thread_pidfds = pidfd_open_flags(gettid() as i32, PIDFD_THREAD).is_ok();
        let tid = std::thread::scope(|s| {
            s.spawn(|| {
                let tid = gettid();
                let Caller::Reader(a) = r.resolve(tid) else {
                    panic!("a live thread of ours resolves");
                };
                assert!(a.host_pidns);
                match r.cached(tid) {
                    Some(b) => {
                        assert!(thread_pidfds, "a non-leader is cached without PIDFD_THREAD");
                        assert!(b.host_pidns);
                        assert!(Arc::ptr_eq(&a.cg, &b.cg));
                    }
                    None => assert!(!thread_pidfds, "second lookup is a cache hit"),
                }
                tid
            })
            .join()
            .expect("resolver thread")
        });
        // The thread is gone: its pidfd fails the check, whatever now holds the tid. (join
        // returns when the thread clears its tid, a moment before the kernel marks it dead.)
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while r.cached(tid).is_some() && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(r.cached(tid).is_none());
        // The thread-group leader is cached on every kernel (a plain pidfd).
        let me = std::process::id();
        assert!(matches!(r.resolve(me), Caller::Reader(_)));
        assert!(r.cached(me).is_some(), "the leader is cached");
    }
}
