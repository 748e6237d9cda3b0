//! Writing a new user namespace's id maps from the parent, and the two-pipe handshake that
//! orders it: the child unshares, says so, and waits; the parent writes the maps and releases it.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{IdRange, UsernsError};

/// Writes `/proc/PID/{uid,gid}_map` for `range` (container 0 -> range start). The writer is
/// host root with CAP_SETGID, so `setgroups` stays "allow": container root may then set its
/// groups, and [`ChildSide::enter`] must (and does) drop the host's supplementary groups.
pub fn write_maps(pid: i32, range: &IdRange) -> Result<(), UsernsError> {
    for (file, line) in [("uid_map", range.uid_map()), ("gid_map", range.gid_map())] {
        let path = format!("/proc/{pid}/{file}");
        // One write(2): the kernel accepts each map file's content exactly once.
        File::options()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| UsernsError::io(path, e))?;
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(UsernsError::sys("pipe2"));
    }
    // SAFETY: pipe2 just returned these two fds to us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes one byte; false on error (allocation-free: also used in forked children).
fn send(fd: &OwnedFd) -> bool {
    loop {
        // SAFETY: writing one byte from a static buffer to an fd we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"u".as_ptr().cast(), 1) };
        if n == 1 {
            return true;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return false;
    }
}

/// Reads one byte; false on EOF (the other side is gone) or error.
fn recv(fd: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a valid buffer from an fd we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            return true;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return false;
    }
}

/// Made before fork; afterwards each process keeps its own side (dropping the other's fds).
pub struct Handshake {
    child: ChildSide,
    parent: ParentSide,
}

/// The parent's ends: reads "unshared", writes "mapped".
pub struct ParentSide {
    unshared: OwnedFd,
    mapped: OwnedFd,
}

/// The child's ends: writes "unshared", reads "mapped".
pub struct ChildSide {
    unshared: OwnedFd,
    mapped: OwnedFd,
}

impl Handshake {
    pub fn new() -> Result<Self, UsernsError> {
        let (unshared_r, unshared_w) = pipe()?;
        let (mapped_r, mapped_w) = pipe()?;
        Ok(Handshake {
            child: ChildSide {
                unshared: unshared_w,
                mapped: mapped_r,
            },
            parent: ParentSide {
                unshared: unshared_r,
                mapped: mapped_w,
            },
        })
    }

    /// In the parent after fork.
    pub fn parent(self) -> ParentSide {
        self.parent
    }

    /// In the child after fork.
    pub fn child(self) -> ChildSide {
        self.child
    }
}

impl ParentSide {
    /// Waits until the child `pid` (as the parent sees it) has unshared its user namespace,
    /// writes the maps, then releases the child. A child that died first gives an error.
    pub fn map(self, pid: i32, range: &IdRange) -> Result<(), UsernsError> {
        if !recv(&self.unshared) {
            return Err(UsernsError::Sys {
                what: format!("container child {pid} exited before creating its user namespace"),
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            });
        }
        write_maps(pid, range)?;
        if !send(&self.mapped) {
            return Err(UsernsError::sys(
                "releasing the container child after its id maps",
            ));
        }
        Ok(())
    }
}

impl ChildSide {
    /// In the child: unshare(CLONE_NEWUSER), wait for the parent's maps, then become root of
    /// the new namespace (host ids = range start) with no supplementary groups, keeping the
    /// parent-death signal. Must run where unshare of a user namespace is allowed:
    /// single-threaded, and not chrooted (pivot_root is fine). Allocation-free unless it fails.
    pub fn enter(self) -> Result<(), UsernsError> {
        let pdeath = pdeath_signal();
        // SAFETY: unshare with a flag constant.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
            return Err(UsernsError::sys("unshare(CLONE_NEWUSER)"));
        }
        if !send(&self.unshared) || !recv(&self.mapped) {
            return Err(UsernsError::Sys {
                what: "the supervisor did not write the id maps".into(),
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            });
        }
        become_root(pdeath)
    }
}

/// For joining a running container (`cgsight exec`): enters the user namespace `userns`
/// (its `/proc/PID/ns/user`) and becomes its root, as [`ChildSide::enter`] does. Call it after
/// every other setns: the other namespaces belong to host root, whose privileges over them
/// end here. Single-threaded callers only (a kernel rule for setns into a user namespace).
pub fn join(userns: BorrowedFd<'_>) -> Result<(), UsernsError> {
    let pdeath = pdeath_signal();
    // SAFETY: setns on a borrowed, open namespace fd.
    if unsafe { libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
        return Err(UsernsError::sys("setns(CLONE_NEWUSER)"));
    }
    become_root(pdeath)
}

fn pdeath_signal() -> libc::c_int {
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
    sig
}

/// Inside a freshly entered user namespace: uid/gid 0 with no supplementary groups (host
/// root's gid 0 would otherwise still open root-group files), then the parent-death signal
/// `pdeath` again (the kernel clears it when the effective ids change).
fn become_root(pdeath: libc::c_int) -> Result<(), UsernsError> {
    // SAFETY: plain syscalls with integer arguments (a null list of zero groups).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(UsernsError::sys("setgroups([])"));
        }
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(UsernsError::sys("setresgid(0)"));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(UsernsError::sys("setresuid(0)"));
        }
        if pdeath != 0 && libc::prctl(libc::PR_SET_PDEATHSIG, pdeath as libc::c_ulong) != 0 {
            return Err(UsernsError::sys("prctl(PR_SET_PDEATHSIG)"));
        }
    }
    Ok(())
}

/// A user namespace with `range`'s maps and no process in it, as an fd: what
/// `mount_setattr(MOUNT_ATTR_IDMAP)` needs before the container's own namespace exists. The
/// mapping is fixed once written, so an idmapped mount made with it matches the container's.
pub fn userns_fd(range: &IdRange) -> Result<OwnedFd, UsernsError> {
    let hs = Handshake::new()?;
    // SAFETY: the child only makes syscalls (unshare, read, write, _exit) before exiting.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(UsernsError::sys("fork"));
    }
    if pid == 0 {
        let side = hs.child();
        // SAFETY: unshare with a flag constant.
        let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 && send(&side.unshared);
        // Hold the namespace until the parent has opened it (then it closes `mapped`).
        let _ = ok && recv(&side.mapped);
        // SAFETY: leave the forked child without running the parent's destructors.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let parent = hs.parent();
    let opened = (|| {
        if !recv(&parent.unshared) {
            return Err(UsernsError::Sys {
                what: "the user namespace helper exited before unsharing".into(),
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            });
        }
        write_maps(pid, range)?;
        let path = format!("/proc/{pid}/ns/user");
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| UsernsError::io(path, e))
    })();
    drop(parent);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    opened
}
