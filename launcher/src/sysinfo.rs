//! sysinfo(2) answered for the container: the supervisor's side of the `sysinfo` notify rule.
//!
//! pid 1 installs the filter with a listener and passes it here before exec; the supervisor's
//! wait loop serves it for the container's life (a thread cannot: the supervisor has unshared
//! the pid and time namespaces for its children, and the kernel refuses CLONE_THREAD then). Each call gets the numbers of `cgsight_fusefs::ContainerFacts`
//! (the /proc views' own code: `free` and `sysinfo()` agree), written into the caller's buffer
//! through /proc/PID/mem opened *before* the id is checked valid: the caller is still blocked
//! in the call then, so the pid cannot have been reused. Anything that fails answers
//! "continue": the kernel runs the real syscall and the caller gets the host's numbers (or the
//! kernel's EFAULT for a bad pointer), never a hang. Loads are stepped here every 5 s from
//! the container's start, as the kernel's are from boot.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use cgsight_cgroup::{Cgroup, Hierarchies};
use cgsight_fusefs::views::loadavg::SAMPLE_SECS;
use cgsight_fusefs::{ContainerFacts, Sysinfo};
use cgsight_seccomp::{Listener, Reply, Request};
use nix::fcntl::{open, openat, OFlag};
use nix::poll::PollFlags;
use nix::sys::stat::Mode;
use tracing::{debug, warn};

/// AUDIT_ARCH_* of our own syscalls: a compat (32-bit) caller's struct has another layout.
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: u32 = 0;

/// The listener and the container's facts, served from the supervisor's wait loop.
pub(crate) struct Server {
    listener: Listener,
    facts: ContainerFacts,
    /// When the load averages take their next step.
    next_sample: Instant,
    /// Cleared once no task uses the filter (POLLHUP): only the sampler is left to run.
    open: bool,
    dirs: ProcDirs,
}

impl Server {
    /// Serves `listener` for the container whose pid 1 is `init` (host pid) in `cg`. None (the
    /// listener closed, so intercepted calls fail with ENOSYS, none hangs) if pid 1 is gone.
    pub(crate) fn new(listener: OwnedFd, h: Hierarchies, cg: Cgroup, init: i32) -> Option<Server> {
        let start_ticks = match cgsight_cgroup::start_ticks(init) {
            Ok(t) => t,
            Err(e) => {
                warn!("sysinfo: cannot read the start of pid {init}: {e}");
                return None;
            }
        };
        let listener = Listener::new(listener);
        if let Err(e) = listener.sync_wakeup() {
            debug!("sysinfo: no same-CPU hand-over (Linux < 6.6?): {e}");
        }
        Some(Server {
            listener,
            facts: ContainerFacts::new(h, cg, start_ticks),
            next_sample: Instant::now() + Duration::from_secs(SAMPLE_SECS),
            open: true,
            dirs: ProcDirs::default(),
        })
    }

    /// The listener to poll for POLLIN, while a task uses the filter.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.open.then(|| self.listener.as_fd())
    }

    /// The longest the wait loop may sleep before [`Server::tick`] is due.
    pub(crate) fn timeout(&self) -> Duration {
        self.next_sample.saturating_duration_since(Instant::now())
    }

    /// Steps the load averages when 5 s have passed (the kernel's LOAD_FREQ).
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        if now < self.next_sample {
            return;
        }
        self.facts.sample_load();
        self.next_sample += Duration::from_secs(SAMPLE_SECS);
        // A supervisor that was stopped does not catch up with a burst of steps.
        if self.next_sample < now {
            self.next_sample = now + Duration::from_secs(SAMPLE_SECS);
        }
    }

    /// The listener polled `revents`: answer a call, or note that nobody is left to make one.
    pub(crate) fn ready(&mut self, revents: PollFlags) {
        if revents.contains(PollFlags::POLLIN) {
            serve_one(&self.listener, &self.facts, &mut self.dirs);
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            self.open = false;
        }
    }
}

fn serve_one(listener: &Listener, facts: &ContainerFacts, dirs: &mut ProcDirs) {
    let req = match listener.recv() {
        Ok(r) => r,
        // The caller left (ENOENT) or we were interrupted: nothing to answer.
        Err(e) => {
            debug!("sysinfo: receive: {e}");
            return;
        }
    };
    let reply = match answer(listener, facts, dirs, &req) {
        Ok(()) => Reply::Value(0),
        Err(why) => {
            debug!(pid = req.pid, "sysinfo: the host's answer: {why}");
            Reply::Continue
        }
    };
    if let Err(e) = listener.respond(req.id, reply) {
        debug!(pid = req.pid, "sysinfo: reply: {e}");
    }
}

/// Writes the container's `struct sysinfo` at the caller's pointer.
fn answer(
    listener: &Listener,
    facts: &ContainerFacts,
    dirs: &mut ProcDirs,
    req: &Request,
) -> Result<(), String> {
    if req.nr != libc::SYS_sysinfo as i32 || req.arch != NATIVE_ARCH {
        return Err(format!("syscall {} arch {:#x}", req.nr, req.arch));
    }
    let info = facts.sysinfo().map_err(|e| e.to_string())?;
    let bytes = to_bytes(&info);
    let mem = dirs.open_mem(req.pid)?;
    if !listener.id_valid(req.id) {
        return Err("the caller is gone".into());
    }
    // A bad pointer fails here (EIO); the kernel's own call then says EFAULT.
    mem.write_all_at(&bytes, req.args[0])
        .map_err(|e| format!("writing at {:#x}: {e}", req.args[0]))
}

/// How many callers' /proc/TID directories stay open.
const PROC_DIRS: usize = 32;

/// The /proc/TID directories of recent callers, kept open: opening `mem` relative to one
/// skips the path walk through /proc on every call. A directory stays bound to its task, not
/// to the number: once that task is gone, `mem` no longer opens in it, so a reused tid cannot
/// reach another process; the entry is then opened again by path.
#[derive(Default)]
struct ProcDirs(Vec<(u32, OwnedFd)>);

impl ProcDirs {
    /// The caller's /proc/TID/mem, opened for writing.
    fn open_mem(&mut self, tid: u32) -> Result<File, String> {
        if let Some(i) = self.0.iter().position(|(t, _)| *t == tid) {
            let dir = self.0.get(i).map(|(_, d)| d.as_fd());
            if let Some(Ok(f)) = dir.map(open_mem_in) {
                return Ok(f);
            }
            self.0.swap_remove(i);
        }
        let dir = open(
            format!("/proc/{tid}").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("/proc/{tid}: {e}"))?;
        let mem = open_mem_in(dir.as_fd()).map_err(|e| format!("/proc/{tid}/mem: {e}"))?;
        if self.0.len() >= PROC_DIRS {
            // The oldest caller is the likeliest to be gone.
            self.0.remove(0);
        }
        self.0.push((tid, dir));
        Ok(mem)
    }
}

fn open_mem_in(dir: BorrowedFd<'_>) -> nix::Result<File> {
    openat(
        dir,
        "mem",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
}

const SYSINFO_LEN: usize = std::mem::size_of::<libc::sysinfo>();

/// `struct sysinfo` as the kernel lays it out, `mem_unit` 1 (bytes, as a 64-bit kernel does).
fn to_bytes(i: &Sysinfo) -> [u8; SYSINFO_LEN] {
    // SAFETY: all-zero is a valid libc::sysinfo (integers and padding).
    let mut s: libc::sysinfo = unsafe { std::mem::zeroed() };
    s.uptime = i.uptime as libc::c_long;
    for (d, l) in s.loads.iter_mut().zip(i.loads) {
        *d = l as libc::c_ulong;
    }
    s.totalram = i.totalram as libc::c_ulong;
    s.freeram = i.freeram as libc::c_ulong;
    s.sharedram = i.sharedram as libc::c_ulong;
    s.bufferram = i.bufferram as libc::c_ulong;
    s.totalswap = i.totalswap as libc::c_ulong;
    s.freeswap = i.freeswap as libc::c_ulong;
    // The kernel's field is 16 bits wide: it wraps, so do we.
    s.procs = i.procs as libc::c_ushort;
    s.mem_unit = 1;
    let mut out = [0u8; SYSINFO_LEN];
    // SAFETY: copying the bytes of a plain C struct we own, for its whole size, into an array
    // of that size.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&s as *const libc::sysinfo).cast::<u8>(),
            out.as_mut_ptr(),
            SYSINFO_LEN,
        )
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_has_the_kernels_layout() {
        let b = to_bytes(&Sysinfo {
            uptime: 7,
            loads: [1, 2, 3],
            totalram: 256 << 20,
            procs: 65537,
            ..Sysinfo::default()
        });
        assert_eq!(b.len(), std::mem::size_of::<libc::sysinfo>());
        let word = |i: usize| {
            let w = std::mem::size_of::<libc::c_long>();
            b.get(i * w..(i + 1) * w).map(|x| x.to_vec())
        };
        assert_eq!(word(0), Some(7i64.to_ne_bytes()[..].to_vec()));
        assert_eq!(word(4), Some((256u64 << 20).to_ne_bytes()[..].to_vec()));
    }

    #[test]
    fn a_kept_proc_dir_never_outlives_its_task() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let tid = child.id();
        let mut dirs = ProcDirs::default();
        let first = dirs.open_mem(tid);
        let again = dirs.open_mem(tid);
        let _ = child.kill();
        let _ = child.wait();
        assert!(first.is_ok() && again.is_ok(), "{first:?} {again:?}");
        assert_eq!(dirs.0.len(), 1, "one directory kept per tid");
        // The task is gone: its kept directory opens nothing, nor does the path.
        assert!(dirs.open_mem(tid).is_err());
        assert!(dirs.0.is_empty(), "the dead task's directory was dropped");
    }
}
