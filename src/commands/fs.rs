//! `cgsight fs`: mount and serve the /proc and /sys views.
//!
//! Without `--foreground` it daemonizes (fork + setsid) and the parent exits 0 only once the
//! mount is serving, so a caller can bind the files right after. A second instance for the
//! same mount point refuses with exit code 3 (pidfile lock, and a serving-mount check); a stale
//! mount left by a killed server is detached and replaced. SIGTERM/SIGINT unmount cleanly.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cgsight_fusefs::{CpuView, FsConfig, IoUringMode};
use nix::sys::signal::{SigSet, Signal};

pub const DEFAULT_MOUNTPOINT: &str = "/var/lib/cgsight/fs";
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

impl From<IoUringArg> for IoUringMode {
    fn from(a: IoUringArg) -> Self {
        match a {
            IoUringArg::Auto => IoUringMode::Auto,
            IoUringArg::On => IoUringMode::On,
            IoUringArg::Off => IoUringMode::Off,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Where to mount the views (lxcfs layout: proc/meminfo, sys/devices/system/cpu/online, …).
    #[arg(long, default_value = DEFAULT_MOUNTPOINT)]
    pub mountpoint: PathBuf,
    /// How many CPUs a container sees.
    #[arg(long, value_enum, default_value = "quota")]
    pub cpu_view: CpuViewArg,
    /// Stay in the foreground (logs on stderr).
    #[arg(long)]
    pub foreground: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Serve FUSE over io_uring, one queue per CPU: the caller, the server thread and the
    /// reply stay on one CPU (about 2x faster per read on a 2-vCPU VM; see the README).
    #[arg(long, value_enum, default_value = "auto")]
    pub io_uring: IoUringArg,
    /// Lock and pid file (default: /run/cgsight/fs.pid for the default mount point, else one
    /// named after the mount point).
    #[arg(long)]
    pub pidfile: Option<PathBuf>,
}

fn pidfile_for(a: &Args) -> PathBuf {
    if let Some(p) = &a.pidfile {
        return p.clone();
    }
    if a.mountpoint == Path::new(DEFAULT_MOUNTPOINT) {
        return PathBuf::from("/run/cgsight/fs.pid");
    }
    let name: String = a
        .mountpoint
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from(format!("/run/cgsight/fs{name}.pid"))
}

/// Reports start-up success or failure to the waiting parent (or nobody, in the foreground).
struct Notify(Option<std::fs::File>);

impl Notify {
    fn send(&mut self, code: u8, msg: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = write!(f, "{code}:{msg}");
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut notify = Notify(None);
    if !a.foreground {
        let (rd, wr) = nix::unistd::pipe().context("pipe")?;
        // SAFETY: no other threads exist yet (nothing has been spawned), so fork is sound.
        match unsafe { nix::unistd::fork() }.context("fork")? {
            nix::unistd::ForkResult::Parent { .. } => {
                drop(wr);
                let mut msg = String::new();
                let _ = std::fs::File::from(rd).read_to_string(&mut msg);
                let (code, text) = msg
                    .split_once(':')
                    .unwrap_or(("1", "the daemon exited during start-up"));
                let code: u8 = code.parse().unwrap_or(1);
                if code != 0 {
                    eprintln!("cgsight fs: {text}");
                }
                return Ok(code);
            }
            nix::unistd::ForkResult::Child => {
                drop(rd);
                notify.0 = Some(std::fs::File::from(wr));
                nix::unistd::setsid().context("setsid")?;
                daemon_stdio(&a)?;
            }
        }
    }
    match serve(&a, &mut notify) {
        Ok(code) => Ok(code),
        Err((code, e)) => {
            notify.send(code, &format!("{e:#}"));
            if a.foreground {
                eprintln!("cgsight fs: {e:#}");
            } else {
                tracing::error!("{e:#}");
            }
            Ok(code)
        }
    }
}

/// stdin/stdout to /dev/null, stderr (the log) to a file next to the pidfile.
fn daemon_stdio(a: &Args) -> anyhow::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let log_path = pidfile_for(a).with_extension("log");
    if let Some(d) = log_path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|_| null.try_clone().expect("dup /dev/null"));
    for (src, dst) in [(&null, 0), (&null, 1), (&log, 2)] {
        // SAFETY: dup2 onto the standard descriptors; both fds are valid.
        unsafe { libc::dup2(src.as_raw_fd(), dst) };
    }
    let _ = std::env::set_current_dir("/");
    Ok(())
}

fn serve(a: &Args, notify: &mut Notify) -> Result<u8, (u8, anyhow::Error)> {
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
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&pidfile).unwrap_or_default();
        return Err((
            EXIT_ALREADY,
            anyhow::anyhow!(
                "another cgsight fs (pid {}) holds {}: it serves {} already",
                holder.trim(),
                pidfile.display(),
                a.mountpoint.display()
            ),
        ));
    }
    if cgsight_fusefs::is_serving(&a.mountpoint) {
        return Err((
            EXIT_ALREADY,
            anyhow::anyhow!("{} is already mounted and serving", a.mountpoint.display()),
        ));
    }
    let _ = lock.set_len(0);
    let _ = (&lock).write_all(format!("{}\n", std::process::id()).as_bytes());

    // Signals go to a waiting thread only: block them before any thread starts.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block()
        .context("blocking signals")
        .map_err(fail)?;

    let cfg = FsConfig {
        mountpoint: a.mountpoint.clone(),
        cpu_view: match a.cpu_view {
            CpuViewArg::Quota => CpuView::Quota,
            CpuViewArg::Cpuset => CpuView::Cpuset,
        },
        threads: a.threads.max(1),
        io_uring: a.io_uring.into(),
    };
    let handle = match cgsight_fusefs::spawn(cfg) {
        Ok(h) => h,
        Err(cgsight_fusefs::Error::AlreadyServing(p)) => {
            return Err((
                EXIT_ALREADY,
                anyhow::anyhow!("{} is already mounted and serving", p.display()),
            ))
        }
        Err(e) => return Err(fail(e.into())),
    };
    notify.send(0, "serving");
    let sig = sigs.wait().unwrap_or(Signal::SIGTERM);
    tracing::info!(signal = %sig, "unmounting");
    handle.unmount();
    let _ = std::fs::remove_file(&pidfile);
    drop(lock);
    Ok(0)
}
