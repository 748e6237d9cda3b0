//! What `cgsight fs` and `cgsight daemon` share to keep the views alive across their own
//! restarts: the pid-file lock, the holder (this process, which keeps the mount and starts
//! servers), the server side (this binary started again by the holder), `--upgrade`, and the
//! repair of containers whose views died with an earlier holder.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};

/// `cgsight fs`'s exit code when another instance serves the mount point.
pub const EXIT_ALREADY: u8 = 3;

/// An exit code and the error behind it.
pub type Failure = (u8, anyhow::Error);

/// Locks `pidfile` for this process's life and writes our pid in it; refuses (exit code 3)
/// when another instance holds it or `mountpoint` already serves.
pub fn lock_pidfile(pidfile: &Path, mountpoint: &Path) -> Result<Flock<std::fs::File>, Failure> {
    let fail = |e: anyhow::Error| (1u8, e);
    if let Some(d) = pidfile.parent() {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating {}", d.display()))
            .map_err(fail)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(pidfile)
        .with_context(|| format!("opening {}", pidfile.display()))
        .map_err(fail)?;
    let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        let holder = std::fs::read_to_string(pidfile).unwrap_or_default();
        return Err((
            EXIT_ALREADY,
            anyhow::anyhow!(
                "another cgsight (pid {}) holds {}: it serves {} already",
                holder.trim(),
                pidfile.display(),
                mountpoint.display()
            ),
        ));
    };
    if cgsight_fusefs::is_serving(mountpoint) {
        return Err((
            EXIT_ALREADY,
            anyhow::anyhow!("{} is already mounted and serving", mountpoint.display()),
        ));
    }
    let _ = lock.set_len(0);
    let _ = (&*lock).write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok(lock)
}

/// The holder's status file, next to the pid file.
fn status_path(pidfile: &Path) -> PathBuf {
    pidfile.with_extension("server")
}

/// Runs the holder for `mountpoint` until SIGTERM/SIGINT. Each server is this binary run
/// again with this process's own arguments (it knows itself a server by what it is handed),
/// so an upgraded binary gets the command line the service was started with.
pub fn hold(
    mountpoint: &Path,
    pidfile: &Path,
    listener: Option<OwnedFd>,
    on_ready: impl FnOnce(),
) -> Result<u8, Failure> {
    let exe = std::env::current_exe()
        .context("finding this binary")
        .map_err(|e| (1, e))?;
    let status = status_path(pidfile);
    let cfg = cgsight_fusefs::HoldConfig {
        mountpoint: mountpoint.to_owned(),
        exe,
        args: std::env::args_os().skip(1).collect(),
        listener,
        status: status.clone(),
    };
    let ready = || {
        on_ready();
        repair_containers(mountpoint);
    };
    let r = match cgsight_fusefs::hold(&cfg, ready) {
        Ok(()) => Ok(0),
        Err(cgsight_fusefs::Error::AlreadyServing(p)) => Err((
            EXIT_ALREADY,
            anyhow::anyhow!("{} is already mounted and serving", p.display()),
        )),
        Err(e) => Err((1, e.into())),
    };
    let _ = std::fs::remove_file(&status);
    let _ = std::fs::remove_file(pidfile);
    r
}

/// A `cgsight fs` server started by the holder: serves the handed connection until SIGTERM
/// (an upgrade, or the holder stopping) or until the connection ends.
pub fn serve_views(
    cfg: &cgsight_fusefs::FsConfig,
    h: cgsight_fusefs::Handed,
) -> anyhow::Result<u8> {
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("blocking signals")?;
    let server = cgsight_fusefs::serve_handed(cfg, h)?;
    let wait = nix::sys::time::TimeSpec::from_duration(Duration::from_millis(500));
    loop {
        // SAFETY: sigtimedwait reads the set we own and writes nothing we pass.
        let sig = unsafe { libc::sigtimedwait(sigs.as_ref(), std::ptr::null_mut(), wait.as_ref()) };
        if sig > 0 && sig != libc::SIGHUP {
            break;
        }
        if server.connection_ended() {
            tracing::info!("the views' connection ended");
            break;
        }
    }
    server.stop();
    Ok(0)
}

/// `--upgrade`: SIGHUP to the holder, then waits for its status to say how it went.
pub fn upgrade(pidfile: &Path) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(pidfile)
        .with_context(|| format!("no cgsight to upgrade: reading {}", pidfile.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pidfile.display()))?;
    let status = status_path(pidfile);
    let (seq0, old, _) = cgsight_fusefs::read_status(&status).with_context(|| {
        format!(
            "pid {pid} is not a holder (no {}): restart it once to use --upgrade",
            status.display()
        )
    })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP)
        .with_context(|| format!("signalling the holder (pid {pid})"))?;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        match cgsight_fusefs::read_status(&status) {
            Some((seq, new, note)) if seq != seq0 && note == "upgraded" => {
                println!("upgraded: server {old} -> {new}");
                return Ok(0);
            }
            Some((seq, _, note)) if seq != seq0 && note.starts_with("upgrade failed") => {
                eprintln!("cgsight: {note}; the old server goes on");
                return Ok(1);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cgsight: no upgrade within 60 s (see the log)");
    Ok(1)
}

/// Binds the live views over the dead ones of running containers whose server died before
/// this one (cgsight_launcher::repair), in a thread so serving and signals are not held up.
pub fn repair_containers(mountpoint: &std::path::Path) {
    let mp = mountpoint.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("views-repair".into())
        .spawn(move || {
            for r in cgsight_launcher::repair::repair_views(&mp) {
                match r.result {
                    Ok(n) => {
                        tracing::info!(container = %r.name, id = %r.id, views = n, "views repaired")
                    }
                    Err(e) => {
                        tracing::warn!(container = %r.name, id = %r.id, "views not repaired: {e}")
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("containers' views not repaired: cannot start a thread: {e}");
    }
}
