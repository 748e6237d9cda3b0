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

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Context;
use cgsight_fusefs::{CpuView, FsConfig, IoUringMode, DEFAULT_MOUNTPOINT};
use cgsight_launcher::startup::{self, Detach, Forked, Notifier, Report};
use nix::sys::signal::{SigSet, Signal};

use crate::holding::EXIT_ALREADY;

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
        return crate::holding::serve_views(&a.views.config(a.threads), h);
    }
    if a.upgrade {
        return crate::holding::upgrade(&pidfile_for(&a));
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
    // Held until this function returns (the daemon's whole life).
    let lock = crate::holding::lock_pidfile(&pidfile, &a.views.mountpoint)?;

    // Signals go to a waiting thread only: block them before any thread starts.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block()
        .context("blocking signals")
        .map_err(fail)?;

    if !matches!(a.views.io_uring, IoUringArg::On) {
        let mp = &a.views.mountpoint;
        let r = crate::holding::hold(mp, &pidfile, None, || notify.send(&Report::Ready));
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
    crate::holding::repair_containers(&a.views.mountpoint);
    let sig = sigs.wait().unwrap_or(Signal::SIGTERM);
    tracing::info!(signal = %sig, "unmounting");
    handle.unmount();
    let _ = std::fs::remove_file(&pidfile);
    drop(lock);
    Ok(0)
}
