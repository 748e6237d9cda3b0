//! The user-notification side of a filter: the supervisor's half of [`crate::Action::Notify`].
//!
//! Raw ioctls on the listener fd that [`crate::Program::install_with_listener`] returned.
//! The safe pattern for touching the caller's memory: receive, open what refers to the caller
//! (e.g. /proc/PID/mem), check [`Listener::id_valid`] (the caller is still waiting, so the pid
//! was not reused), then write and [`Listener::respond`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

/// include/uapi/linux/seccomp.h (not in the libc crate yet).
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;

/// One intercepted call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    /// The caller's thread id in the receiver's pid namespace.
    pub pid: u32,
    pub nr: i32,
    /// AUDIT_ARCH_* of the call.
    pub arch: u32,
    pub args: [u64; 6],
}

/// What the caller gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The syscall returns `val`.
    Value(i64),
    /// The syscall fails with this errno.
    Error(i32),
    /// The kernel runs the real syscall (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
    Continue,
}

/// A filter's listener.
#[derive(Debug)]
pub struct Listener(OwnedFd);

impl Listener {
    pub fn new(fd: OwnedFd) -> Self {
        Listener(fd)
    }

    /// Waits for the next call (SECCOMP_IOCTL_NOTIF_RECV). ENOENT: the caller went away
    /// between the wake-up and the receive; EINTR: interrupted; both are worth a retry.
    pub fn recv(&self) -> Result<Request, Errno> {
        // SAFETY: all-zero is a valid seccomp_notif; the kernel wants it zeroed.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl writes one seccomp_notif into `n`, which we own.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
        if r < 0 {
            return Err(Errno::last());
        }
        Ok(Request {
            id: n.id,
            pid: n.pid,
            nr: n.data.nr,
            arch: n.data.arch,
            args: n.data.args,
        })
    }

    /// Asks the kernel to hand each call and its answer over on the current CPU
    /// (SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6+): caller
    /// and supervisor take turns, so a wake-up on another CPU (an IPI, often an idle CPU's
    /// exit) is pure latency. EINVAL/ENOTTY on older kernels, which then wake as before.
    pub fn sync_wakeup(&self) -> Result<(), Errno> {
        // SAFETY: the kernel takes the flags by value despite the _IOW(.., u64) encoding
        // (seccomp_notify_set_flags(filter, arg)); no memory is touched.
        let r = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            )
        };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }

    /// Whether the call `id` is still waiting for its answer (SECCOMP_IOCTL_NOTIF_ID_VALID).
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64 from the pointer.
        unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
    }

    /// Answers the call `id` (SECCOMP_IOCTL_NOTIF_SEND). ENOENT: the caller is gone.
    pub fn respond(&self, id: u64, reply: Reply) -> Result<(), Errno> {
        let (val, error, flags) = match reply {
            Reply::Value(v) => (v, 0, 0),
            Reply::Error(e) => (0, -e.abs(), 0),
            Reply::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        };
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: the ioctl reads one seccomp_notif_resp from the pointer.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
