//! The mount's lifecycle around the server: is a live server there, make the mount point,
//! detach a dead server's mount, abort a connection held elsewhere.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::probe::{read_bounded, start_read, Probe, Reading};

/// How long [`is_serving`] waits for the server's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// True when `mp` is a live mount of these views: its uptime file reads within 2 s. A stopped
/// or hung server gives false (and does not hang the caller: the read is done by a killable process).
pub fn is_serving(mp: &Path) -> bool {
    serving_state(mp) == Serving::Answers
}

/// What serves the views at a mount point, as one bounded probe finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// Its uptime file reads within 2 s.
    Answers,
    /// Nothing is mounted there, or the mount's server is gone (or it is not these views):
    /// starting a server can help.
    Absent,
    /// A server is mounted there and did not answer within 2 s (stopped or hung). It holds
    /// the mount point's lock, so starting another cannot help.
    Hung,
}

/// See [`Serving`]; never hangs, whatever the server does.
pub fn serving_state(mp: &Path) -> Serving {
    start_serving_probe(mp).finish()
}

/// A [`serving_state`] probe under way (its reader is a separate process), so a caller can
/// do other work while the server answers.
pub struct ServingProbe(Option<Reading>);

impl ServingProbe {
    pub fn finish(self) -> Serving {
        match self.0.map(|r| r.finish(PROBE_TIMEOUT)) {
            Some(Probe::Read) => Serving::Answers,
            Some(Probe::TimedOut) => Serving::Hung,
            Some(Probe::Failed(_)) | None => Serving::Absent,
        }
    }
}

/// Starts a [`serving_state`] probe of `mp`.
pub fn start_serving_probe(mp: &Path) -> ServingProbe {
    let reading = mount_path(mp)
        .filter(|p| is_mountpoint(p))
        .and_then(|p| start_read(&p.join("proc/uptime")).ok());
    ServingProbe(reading)
}

/// `mp` absolute and free of symlinks, found without entering it: its parent is
/// canonicalized and its last component joined (a stat of the mount point itself would be a
/// request to the very server being checked).
fn mount_path(mp: &Path) -> Option<PathBuf> {
    let mut p = std::path::absolute(mp).ok()?;
    // Bounded like the kernel's symlink limit.
    for _ in 0..40 {
        let name = p.file_name()?.to_owned();
        let parent = p.parent()?.canonicalize().ok()?;
        let joined = parent.join(&name);
        // readlink does not ask a mount's server: a mounted directory is simply no link.
        match std::fs::read_link(&joined) {
            Ok(target) => p = parent.join(target),
            Err(_) => return Some(joined),
        }
    }
    None
}

/// `mp` (as [`mount_path`] gives it) is a mount point.
fn is_mountpoint(mp: &Path) -> bool {
    cgsight_cgroup::mountinfo::read_self()
        .is_ok_and(|m| cgsight_cgroup::mountinfo::is_mount_point(&m, mp))
}

pub(crate) fn detach(mp: &Path) -> nix::Result<()> {
    nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH)
}

/// The errors a FUSE mount whose server died answers with: ENOTCONN over /dev/fuse,
/// ECONNABORTED over io_uring, and ECANCELED for a request that raced the kernel's
/// (asynchronous) teardown of a dead server's rings.
fn dead_server(errno: i32) -> bool {
    matches!(errno, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
}

fn detach_stale(mp: &Path) -> Result<(), Error> {
    tracing::warn!(mountpoint = %mp.display(), "detaching a stale FUSE mount");
    detach(mp).map_err(|e| Error::Io {
        path: mp.into(),
        what: "detaching a stale mount",
        source: e.into(),
    })
}

/// What [`prepare_mountpoint`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// The directory was made here (the server removes it again when it unmounts).
    Created,
    /// A directory that was there, with nothing mounted on it that answers.
    Found,
    /// A server already answers there.
    Serving,
}

/// Makes the mount point (and its parents) and detaches a dead FUSE mount left there by a
/// killed server (see [`dead_server`]). A mounted server that does not answer (stopped, hung)
/// is an error: mounting over it would hide it, not fix it. One probe decides: a second one
/// that timed out under load would have stacked a new server over a live one.
pub(crate) fn prepare_mountpoint(mp: &Path) -> Result<Prepared, Error> {
    for _ in 0..8 {
        // Probed before any stat of `mp`, which a stopped server would never answer.
        if let Some(canon) = mount_path(mp).filter(|c| is_mountpoint(c)) {
            match read_bounded(&canon.join("proc/uptime"), PROBE_TIMEOUT) {
                Probe::Failed(e) if dead_server(e) => {
                    detach_stale(mp)?;
                    continue;
                }
                Probe::TimedOut => {
                    return Err(Error::Io {
                        path: mp.into(),
                        what: "a FUSE server is mounted there but does not answer",
                        source: io::Error::from_raw_os_error(libc::ETIMEDOUT),
                    })
                }
                Probe::Read => return Ok(Prepared::Serving),
                // A mount of something else: mounted over, as before.
                Probe::Failed(_) => return Ok(Prepared::Found),
            }
        }
        match std::fs::metadata(mp) {
            Ok(m) if m.is_dir() => return Ok(Prepared::Found),
            Ok(_) => {
                return Err(Error::Io {
                    path: mp.into(),
                    what: "mount point",
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                })
            }
            Err(e) if e.raw_os_error().is_some_and(dead_server) => detach_stale(mp)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(mp).map_err(|source| Error::Io {
                    path: mp.into(),
                    what: "creating the mount point",
                    source,
                })?;
                return Ok(Prepared::Created);
            }
            Err(source) => {
                return Err(Error::Io {
                    path: mp.into(),
                    what: "mount point",
                    source,
                })
            }
        }
    }
    Ok(Prepared::Found)
}

/// Aborts FUSE connection `conn` through fusectl, mounting fusectl first where the system has
/// not (systemd does at boot; minimal VMs and containers often do not, and without it a
/// connection held by bind mounts elsewhere outlives the server's unmount).
pub(crate) fn abort_connection(conn: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    let abort = dir.join(conn.to_string()).join("abort");
    if !abort.exists() && dir.is_dir() {
        let r = nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
        if let Err(e) = r {
            tracing::debug!(error = %e, "mounting fusectl");
        }
    }
    if let Err(e) = std::fs::write(&abort, "1") {
        tracing::debug!(path = %abort.display(), error = %e, "aborting the FUSE connection");
    }
}

/// The pid (and lock) file of the server for `mountpoint` when none is named:
/// /run/cgsight/fs.pid for the default mount point, else one named after the mount point.
pub fn pidfile_path(mountpoint: &Path) -> PathBuf {
    if mountpoint == Path::new(crate::DEFAULT_MOUNTPOINT) {
        return PathBuf::from("/run/cgsight/fs.pid");
    }
    let name: String = mountpoint
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from(format!("/run/cgsight/fs{name}.pid"))
}

/// Where a background server logs: next to its pid file. One function for `cgsight fs` and
/// the launcher that starts it, so a warning names the file the server really writes.
pub fn log_path(pidfile: &Path) -> PathBuf {
    pidfile.with_extension("log")
}
