//! The /proc views a container sees: where `cgsight fs` serves them, and starting it when
//! nothing serves there yet.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;

use crate::startup::{self, Detach, Report};

/// Where the views are served: `CGSIGHT_FS_MOUNTPOINT`, else the host-wide default. Tests point
/// it at a private `cgsight fs` so they never leave a host daemon behind.
pub fn views_mountpoint() -> PathBuf {
    std::env::var_os("CGSIGHT_FS_MOUNTPOINT")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(cgsight_fusefs::DEFAULT_MOUNTPOINT),
            PathBuf::from,
        )
}

/// Starts `cgsight fs` (the binary `exe`) if `probe` (of [`views_mountpoint`]) found no live
/// view mounted. Returns the mountpoint, or None with a warning when the views cannot be
/// served (the container then sees the host's files). Must be called while the process is
/// single-threaded.
pub fn ensure_views(exe: &Path, probe: cgsight_fusefs::ServingProbe) -> Option<PathBuf> {
    let mp = views_mountpoint();
    let off = "the /proc views are off for this container";
    let log_file = cgsight_fusefs::log_path(&cgsight_fusefs::pidfile_path(&mp));
    let log_name = log_file.display();
    match probe.finish() {
        cgsight_fusefs::Serving::Answers => return Some(mp),
        // The hung server holds the lock: a new `cgsight fs` would only find it again, and a
        // second probe would double the wait.
        cgsight_fusefs::Serving::Hung => {
            warn!("{off}: the `cgsight fs` serving {} does not answer (stopped or hung; see {log_name}); the container will see the host's /proc files", mp.display());
            return None;
        }
        cgsight_fusefs::Serving::Absent => {}
    }
    // The daemon outlives us: it must not hold our stdout/stderr (a caller reading our output
    // to EOF would hang), so it logs where `cgsight fs` itself would for this mount point.
    if let Some(d) = log_file.parent() {
        let _ = fs::create_dir_all(d);
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file);
    let argv: Result<Vec<CString>, _> = [
        exe.as_os_str().as_bytes(),
        b"fs",
        b"--foreground",
        b"--mountpoint",
        mp.as_os_str().as_bytes(),
    ]
    .into_iter()
    .map(|b| CString::new(b.to_vec()))
    .collect();
    let argv = match argv {
        Ok(a) => a,
        Err(e) => {
            warn!("{off}: {e}");
            return None;
        }
    };
    let io = Detach {
        stdout: None,
        stderr: log.as_ref().ok().map(AsFd::as_fd),
        // It reports once serving; do not wait forever on a daemon that never gets there.
        timeout: Some(Duration::from_secs(10)),
    };
    match startup::spawn_reporting(&argv, &io) {
        Ok(Report::Ready) => Some(mp),
        // Another launch may have started it meanwhile: that one serves us too, if it
        // answers. A stopped or hung server also holds the lock: binding its files would hang
        // this container's start for as long as it does, so the views are off instead.
        Ok(Report::AlreadyServing(_)) if cgsight_fusefs::is_serving(&mp) => Some(mp),
        Ok(Report::AlreadyServing(_)) => {
            warn!("{off}: the `cgsight fs` serving {} does not answer (stopped or hung; see {log_name}); the container will see the host's /proc files", mp.display());
            None
        }
        Ok(Report::Failed { msg, .. }) => {
            warn!("{off}: `cgsight fs` failed: {msg} (see {log_name}); the container will see the host's /proc/meminfo, cpuinfo, ... (use --no-proc-views to silence)");
            None
        }
        Ok(Report::TimedOut) => {
            warn!("{off}: `cgsight fs` did not report serving within 10 s (see {log_name})");
            None
        }
        Ok(Report::Silent) => {
            warn!("{off}: `cgsight fs` exited during start-up (see {log_name})");
            None
        }
        Err(e) => {
            warn!("{off}: cannot start `cgsight fs`: {e}");
            None
        }
    }
}

/// Whether a running container's /proc views answer, as `ps` and `inspect` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewsHealth {
    /// Nothing of the views is mounted in the container (`--no-proc-views`, or they could not
    /// be started): it sees the host's files.
    Off,
    Ok,
    /// The bind's server is gone ("Transport endpoint is not connected"): every read of the
    /// bound files fails until the views are repaired or the container restarted.
    Broken,
    /// The server does not answer within a second (stopped or hung).
    Hung,
}

impl ViewsHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewsHealth::Off => "off",
            ViewsHealth::Ok => "ok",
            ViewsHealth::Broken => "broken",
            ViewsHealth::Hung => "hung",
        }
    }
}

/// The views of the container whose init is `pid`: its mount table says whether a FUSE file
/// is bound at /proc/uptime, and a bounded read of that file through the container's root (in
/// a killable child, so a hung server cannot hang `ps`) says whether it answers.
pub fn health(pid: i32) -> ViewsHealth {
    let Ok(mounts) = cgsight_cgroup::mountinfo::read(Path::new(&format!("/proc/{pid}/mountinfo")))
    else {
        return ViewsHealth::Off;
    };
    let bound = cgsight_cgroup::mountinfo::top_mount_at(&mounts, Path::new("/proc/uptime"))
        .is_some_and(|m| m.fstype.starts_with("fuse"));
    if !bound {
        return ViewsHealth::Off;
    }
    let file = PathBuf::from(format!("/proc/{pid}/root/proc/uptime"));
    match cgsight_fusefs::read_bounded(&file, Duration::from_secs(1)) {
        cgsight_fusefs::Probe::Read => ViewsHealth::Ok,
        cgsight_fusefs::Probe::TimedOut => ViewsHealth::Hung,
        cgsight_fusefs::Probe::Failed(_) => ViewsHealth::Broken,
    }
}
