//! Naming a container's network namespace and running code inside it.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};
use crate::netlink::NsTarget;

/// A container's network namespace: by the pid of a process in it, or an open nsfs descriptor
/// (e.g. `/proc/PID/ns/net` or a bind-mounted `/run/netns/NAME`).
#[derive(Debug, Clone, Copy)]
pub enum Netns<'a> {
    Pid(u32),
    Fd(BorrowedFd<'a>),
}

impl<'a> Netns<'a> {
    pub(crate) fn target(self) -> NsTarget<'a> {
        match self {
            Netns::Pid(p) => NsTarget::Pid(p),
            Netns::Fd(fd) => NsTarget::Fd(fd),
        }
    }

    fn open(self) -> Result<Option<OwnedFd>> {
        match self {
            Netns::Pid(p) => {
                let path = format!("/proc/{p}/ns/net");
                let f = File::open(&path).map_err(|e| Error::io("open netns", path, e))?;
                Ok(Some(f.into()))
            }
            Netns::Fd(_) => Ok(None),
        }
    }
}

/// Runs `f` on a short-lived thread that has joined `ns` (setns is per thread, so the caller's
/// namespace is untouched, and sockets opened by `f` stay bound to `ns` after it returns).
pub fn run_in<T: Send>(ns: Netns<'_>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let owned = ns.open()?;
    let fd: BorrowedFd<'_> = match (&owned, ns) {
        (Some(o), _) => o.as_fd(),
        (None, Netns::Fd(fd)) => fd,
        (None, Netns::Pid(_)) => {
            return Err(Error::Netlink {
                op: "setns".into(),
                source: std::io::Error::other("no namespace descriptor"),
            })
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netlink {
                op: "setns".into(),
                source: e.into(),
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Netlink {
                op: "netns thread".into(),
                source: std::io::Error::other("panicked"),
            })
        })
    })
}

/// A new, empty network namespace held only by the returned descriptor (no process in it, no
/// bind mount): it disappears when the descriptor and every process that joined it are gone, so
/// nothing is left behind whatever happens to the caller. Made on a short-lived thread, since
/// unshare(CLONE_NEWNET) moves only the calling thread.
pub fn create() -> Result<OwnedFd> {
    let err = |op: &str, e: std::io::Error| Error::Netlink {
        op: op.into(),
        source: e,
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| err("unshare(CLONE_NEWNET)", e.into()))?;
            let f = File::open("/proc/thread-self/ns/net").map_err(|e| err("open netns", e))?;
            Ok(OwnedFd::from(f))
        })
        .join()
        .unwrap_or_else(|_| Err(err("netns thread", std::io::Error::other("panicked"))))
    })
}
