//! `cgsight fs`: mount and serve the /proc and /sys views.
//!
//! Without `--foreground` it daemonizes through the launcher's start-up handshake and the
//! parent exits 0 only once the mount is serving, so a caller can bind the files right after.
//! A second instance for the same mount point refuses with exit code 3 (pidfile lock, and a
//! serving-mount check); a stale mount left by a killed server is detached and replaced.
//! SIGTERM/SIGINT unmount cleanly. `--startup-fd` (used by `launch`) reports on a descriptor
//! the caller passed instead.
//!
//! The process that stays is the holder ([`cgsight_fusefs::hold`]): it owns the mount and
//! runs the views in a server process it restarts when it dies and replaces on SIGHUP or
//! `--upgrade`, so containers never lose their views. `--io-uring on` serves in-process
//! instead (io_uring queues are not handed over).

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cgsight_fusefs::{CpuView, FsConfig, IoUringMode, DEFAULT_MOUNTPOINT};
use cgsight_launcher::startup::{self, Detach, Forked, Notifier, Report};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};

const EXIT_ALREADY: u8 = 3;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CpuViewArg {
    /// min(cpuset size, ceil(CPU quota))
    Quota,
    /// the cpuset size
    Cpuset,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum IoUringArg {
    /// when the kernel has it switched on (fuse.enable_uring=Y)
    Auto,
    /// switch it on (Linux 6.14+ with CONFIG_FUSE_IO_URING); fail if the kernel lacks it
    On,
    /// /dev/fuse only
    Off,
}

impl From<CpuViewArg> for CpuView {
    fn from(a: CpuViewArg) -> Self {
        match a {
            CpuViewArg::Quota => CpuView::Quota,
            CpuViewArg::Cpuset => CpuView::Cpuset,
        }
    }
}

impl From<IoUringArg> for IoUringMode {
    fn from(a: IoUringArg) -> Self {
        match a {
            IoUringArg::Auto => IoUringMode::Auto,
            IoUringArg::On => IoUringMode::On,
            IoUringArg::Off => IoUringMode::Off,
        }
    }
}

/// The views' flags, shared with `cgsight daemon`.
#[derive(clap::Args)]
#[group(skip)]
pub struct ViewArgs {
    /// Where to mount the views (lxcfs layout: proc/meminfo, sys/devices/system/cpu/online, …).
    #[arg(long, default_value = DEFAULT_MOUNTPOINT)]
    pub mountpoint: PathBuf,
    /// How many CPUs a container sees.
    #[arg(long, value_enum, default_value = "quota")]
    pub cpu_view: CpuViewArg,
    /// Serve FUSE over io_uring, one queue per CPU: the caller, the server thread and the
    /// reply stay on one CPU (about 2x faster per read on a 2-vCPU VM; see the README).
    #[arg(long, value_enum, default_value = "auto")]
    pub io_uring: IoUringArg,
}

impl ViewArgs {
    pub fn config(&self, threads: usize) -> FsConfig {
        FsConfig {
            mountpoint: self.mountpoint.clone(),
            cpu_view: self.cpu_view.into(),
            threads: threads.max(1),
            io_uring: self.io_uring.into(),
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub views: ViewArgs,
    /// Stay in the foreground (logs on stderr).
    #[arg(long)]
    pub foreground: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Report start-up on this inherited descriptor (set by `cgsight launch`).
    #[arg(long, hide = true)]
    pub startup_fd: Option<i32>,
    /// Lock and pid file (default: /run/cgsight/fs.pid for the default mount point, else one
    /// named after the mount point).
    #[arg(long)]
    pub pidfile: Option<PathBuf>,
    /// Replace the running server by the binary now on disk, with no failed read, and exit
    /// (the same as SIGHUP to the pid in the pid file, but waits for the outcome).
    #[arg(long)]
    pub upgrade: bool,
}

fn pidfile_for(a: &Args) -> PathBuf {
    match &a.pidfile {
        Some(p) => p.clone(),
        None => cgsight_fusefs::pidfile_path(&a.views.mountpoint),
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if let Some(h) = cgsight_fusefs::Handed::from_env() {
        return serve_handed(&a, h);
    }
    if a.upgrade {
        return upgrade(&pidfile_for(&a));
    }
    // Before anything of ours is open: only stdio and the start-up pipe are meant for us.
    startup::close_inherited(a.startup_fd);
    let mut notify = match a.startup_fd {
        Some(fd) => Notifier::inherited(fd)?,
        None if a.foreground => Notifier::none(),
        None => match daemonize(&a)? {
            Forked::Parent { report, .. } => return Ok(exit_code(report)),
            Forked::Child(n) => n,
        },
    };
    if !a.foreground || a.startup_fd.is_some() {
        let _ = std::env::set_current_dir("/");
    }
    match serve(&a, &mut notify) {
        Ok(code) => Ok(code),
        Err((code, e)) => {
            notify.send(&if code == EXIT_ALREADY {
                Report::AlreadyServing(format!("{e:#}"))
            } else {
                Report::Failed {
                    code,
                    msg: format!("{e:#}"),
                }
            });
            if a.foreground {
                eprintln!("cgsight fs: {e:#}");
            } else {
                tracing::error!("{e:#}");
            }
            Ok(code)
        }
    }
}

/// Forks the daemon: stdin/stdout to /dev/null, stderr (the log) to a file next to the
/// pidfile.
fn daemonize(a: &Args) -> anyhow::Result<Forked> {
    let log_path = cgsight_fusefs::log_path(&pidfile_for(a));
    if let Some(d) = log_path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ok();
    let io = Detach {
        stdout: None,
        stderr: log.as_ref().map(AsFd::as_fd),
        timeout: None,
    };
    Ok(startup::daemonize(&io)?)
}

/// The parent's exit code: 0 once serving, 3 when another instance serves, else the error's.
fn exit_code(r: Report) -> u8 {
    match r {
        Report::Ready => 0,
        Report::AlreadyServing(msg) => {
            eprintln!("cgsight fs: {msg}");
            EXIT_ALREADY
        }
        Report::Failed { code, msg } => {
            eprintln!("cgsight fs: {msg}");
            code
        }
        Report::Silent | Report::TimedOut => {
            eprintln!("cgsight fs: the daemon exited during start-up");
            1
        }
    }
}

fn serve(a: &Args, notify: &mut Notifier) -> Result<u8, (u8, anyhow::Error)> {
    let fail = |e: anyhow::Error| (1u8, e);
    let pidfile = pidfile_for(a);
    if let Some(d) = pidfile.parent() {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating {}", d.display()))
            .map_err(fail)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&pidfile)
        .with_context(|| format!("opening {}", pidfile.display()))
        .map_err(fail)?;
    // Held until this function returns (the daemon's whole life).
    let Ok(lock) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else {
        let holder = std::fs::read_to_string(&pidfile).unwrap_or_default();
        return Err((
            EXIT_ALREADY,
            anyhow::anyhow!(
                "another cgsight fs (pid {}) holds {}: it serves {} already",
                holder.trim(),
                pidfile.display(),
                a.views.mountpoint.display()
            ),
        ));
    };
    if cgsight_fusefs::is_serving(&a.views.mountpoint) {
        return Err((
            EXIT_ALREADY,
            anyhow::anyhow!(
                "{} is already mounted and serving",
                a.views.mountpoint.display()
            ),
        ));
    }
    let _ = lock.set_len(0);
    let _ = (&*lock).write_all(format!("{}\n", std::process::id()).as_bytes());

    // Signals go to a waiting thread only: block them before any thread starts.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block()
        .context("blocking signals")
        .map_err(fail)?;

    if !matches!(a.views.io_uring, IoUringArg::On) {
        let status = status_path(&pidfile);
        let r = hold(a, &status, notify);
        let _ = std::fs::remove_file(&status);
        let _ = std::fs::remove_file(&pidfile);
        drop(lock);
        return r;
    }
    let handle = match cgsight_fusefs::spawn(a.views.config(a.threads)) {
        Ok(h) => h,
        Err(cgsight_fusefs::Error::AlreadyServing(p)) => {
            return Err((
                EXIT_ALREADY,
                anyhow::anyhow!("{} is already mounted and serving", p.display()),
            ))
        }
        Err(e) => return Err(fail(e.into())),
    };
    notify.send(&Report::Ready);
    repair_containers(&a.views.mountpoint);
    let sig = sigs.wait().unwrap_or(Signal::SIGTERM);
    tracing::info!(signal = %sig, "unmounting");
    handle.unmount();
    let _ = std::fs::remove_file(&pidfile);
    drop(lock);
    Ok(0)
}

/// The holder's status file, next to the pid file.
fn status_path(pidfile: &Path) -> PathBuf {
    pidfile.with_extension("server")
}

/// Runs the holder until SIGTERM/SIGINT; the server runs this binary with the views' flags.
fn hold(a: &Args, status: &Path, notify: &mut Notifier) -> Result<u8, (u8, anyhow::Error)> {
    let exe = std::env::current_exe()
        .context("finding this binary")
        .map_err(|e| (1, e))?;
    let mut args: Vec<std::ffi::OsString> = vec!["fs".into(), "--mountpoint".into()];
    args.push(a.views.mountpoint.clone().into_os_string());
    args.extend(
        [
            "--cpu-view",
            match a.views.cpu_view {
                CpuViewArg::Quota => "quota",
                CpuViewArg::Cpuset => "cpuset",
            },
            "--threads",
            &a.threads.to_string(),
        ]
        .map(Into::into),
    );
    let cfg = cgsight_fusefs::HoldConfig {
        mountpoint: a.views.mountpoint.clone(),
        exe,
        args,
        status: status.to_owned(),
    };
    let ready = || {
        notify.send(&Report::Ready);
        repair_containers(&a.views.mountpoint);
    };
    match cgsight_fusefs::hold(&cfg, ready) {
        Ok(()) => Ok(0),
        Err(cgsight_fusefs::Error::AlreadyServing(p)) => Err((
            EXIT_ALREADY,
            anyhow::anyhow!("{} is already mounted and serving", p.display()),
        )),
        Err(e) => Err((1, e.into())),
    }
}

/// A server started by the holder: serves the handed connection until SIGTERM (an upgrade
/// or the holder's stop) or until the connection ends.
fn serve_handed(a: &Args, h: cgsight_fusefs::Handed) -> anyhow::Result<u8> {
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("blocking signals")?;
    let server = cgsight_fusefs::serve_handed(&a.views.config(a.threads), h)?;
    let wait = nix::sys::time::TimeSpec::from_duration(std::time::Duration::from_millis(500));
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

/// `--upgrade`: SIGHUP to the holder, then waits for its status to change.
fn upgrade(pidfile: &Path) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(pidfile)
        .with_context(|| format!("no cgsight fs to upgrade: reading {}", pidfile.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pidfile.display()))?;
    let status = status_path(pidfile);
    let (seq0, old, _) = cgsight_fusefs::read_status(&status).with_context(|| {
        format!(
            "{} is not a holder (no {}): restart it to use --upgrade",
            pidfile.display(),
            status.display()
        )
    })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP)
        .with_context(|| format!("signalling cgsight fs (pid {pid})"))?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < end {
        match cgsight_fusefs::read_status(&status) {
            Some((seq, new, note)) if seq != seq0 && note == "upgraded" => {
                println!("upgraded: server {old} -> {new}");
                return Ok(0);
            }
            Some((seq, _, note)) if seq != seq0 && note.starts_with("upgrade failed") => {
                eprintln!("cgsight fs: {note}; the old server goes on");
                return Ok(1);
            }
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("cgsight fs: no upgrade within 60 s (see the log)");
    Ok(1)
}

/// Binds the live views over the dead ones of running containers whose server died before
/// this one (cgsight_launcher::repair), in a thread so serving and signals are not held up.
pub(crate) fn repair_containers(mountpoint: &std::path::Path) {
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
