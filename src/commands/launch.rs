//! `cgsight launch` (alias `run`): flags to a spec, then the supervisor in the foreground or,
//! with `-d`, detached through the start-up handshake.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Context;
use cgsight_cgroup::CpuList;
use cgsight_image::store::StoreLock;
use cgsight_launcher::spec::{self, RawSpec};
use cgsight_launcher::startup::{self, Detach, Forked, Report};
use cgsight_launcher::supervisor::{self, Prepared};
use cgsight_launcher::{Store, EXIT_LAUNCHER};

#[derive(clap::Args)]
pub struct LaunchArgs {
    /// Container name (unique; default c-<short id>).
    #[arg(long)]
    name: Option<String>,
    /// Hostname inside the container (default: the short id).
    #[arg(long)]
    hostname: Option<String>,
    /// Memory limit, e.g. 256m, 1g.
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Memory plus swap (-1 = unlimited swap; default 2 x --memory where swap accounting exists).
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// CPU quota in CPUs, e.g. 1.5.
    #[arg(long, allow_hyphen_values = true)]
    cpus: Option<String>,
    /// Relative CPU weight (v1 shares, 2..262144).
    #[arg(long)]
    cpu_shares: Option<String>,
    /// CPUs the container may run on, e.g. 0-1.
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Maximum number of processes (-1 = unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<String>,
    /// Root filesystem directory (lower layer of the overlay; default: the host's /).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Environment variable KEY=VALUE (or KEY to copy it from here).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Bind mount HOST:CONTAINER[:ro|rw].
    #[arg(short = 'v', long = "volume")]
    volumes: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Run as USER[:GROUP] or UID[:GID] (names from the container's /etc/passwd, /etc/group).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Replace the image's Entrypoint ("" for none).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network: bridge (default: eth0 on cgsight0, NAT), none (loopback only), host, or
    /// container:NAME (share another container's network).
    #[arg(long, alias = "network")]
    net: Option<String>,
    /// Publish a container port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp] (bridge only).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Remove the container (layers, state) when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the id.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep stdin attached.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run a tiny init as pid 1 that forwards signals and reaps zombies.
    #[arg(long)]
    init: bool,
    /// Do not bind the cgsight fs views over /proc and /sys/devices/system/cpu.
    #[arg(long)]
    no_proc_views: bool,
    /// Refuse to start (exit 125) when the views cannot be served (a hung or failing
    /// `cgsight fs`), instead of starting with the host's /proc files.
    #[arg(long)]
    require_proc_views: bool,
    /// Pass descriptors 3..3+N to the command (all others are closed).
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Security options (docker's): seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges.
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Expose a host device: HOST[:CONTAINER][:rwm] (node created in /dev, its rule allowed).
    #[arg(long = "device")]
    device: Vec<String>,
    /// Give the container every capability and host device, with no seccomp filter and no
    /// masked /proc or /sys paths (docker's --privileged; the cgroup limits still apply).
    #[arg(long)]
    privileged: bool,
    /// User namespace: host (default) or auto (container root is an unprivileged host id range).
    #[arg(long)]
    userns: Option<String>,
    /// IMAGE [CMD...] (the image's layers as the root), or -- CMD... (the host's root, or --rootfs).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

fn host_cpus() -> CpuList {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| CpuList::parse(s.trim()))
        .or_else(|| CpuList::parse("0"))
        .unwrap_or_default()
}

pub fn run(a: LaunchArgs) -> anyhow::Result<u8> {
    if a.no_proc_views && a.require_proc_views {
        eprintln!(
            "cgsight: --no-proc-views and --require-proc-views contradict each other: use one"
        );
        return Ok(EXIT_LAUNCHER);
    }
    let mut raw = RawSpec {
        name: a.name,
        hostname: a.hostname,
        memory: a.memory,
        memory_swap: a.memory_swap,
        cpus: a.cpus,
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus,
        pids_limit: a.pids_limit,
        rootfs: a.rootfs,
        env: a.env,
        volumes: a.volumes,
        workdir: a.workdir,
        net: a.net,
        publish: a.publish,
        tty: a.tty,
        interactive: a.interactive,
        init: a.init,
        rm: a.rm,
        detach: a.detach,
        no_proc_views: a.no_proc_views,
        require_proc_views: a.require_proc_views,
        preserve_fds: a.preserve_fds,
        security_opts: a.security_opt,
        devices: a.device,
        userns: a.userns,
        privileged: a.privileged,
        command: a.command,
        user: a.user,
        ..RawSpec::default()
    };
    let image_lock = match with_image(&mut raw, a.entrypoint.as_deref()) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let id = spec::new_id().context("generating an id")?;
    let spec = match spec::build(&raw, &id, &host_cpus(), |k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cgsight: {e}");
            return Ok(EXIT_LAUNCHER);
        }
    };
    let exe = std::env::current_exe().context("locating the cgsight binary")?;
    let detach = spec.detach;
    let prepared = match supervisor::prepare(spec, Store::from_env(), &exe) {
        Ok(p) => p,
        Err(e) => return Ok(super::fail(&e)),
    };
    // The state naming the image exists now, so rmi sees the container; released before any
    // fork, which would share the lock with the supervisor for the container's lifetime.
    drop(image_lock);
    if !detach {
        return Ok(match supervisor::supervise(prepared, &mut |_| {}) {
            Ok(c) => c,
            Err(e) => super::fail(&e),
        });
    }
    detached(prepared)
}

/// `launch IMAGE [CMD...]`: the image's layers and config into `raw`, and the image store's
/// lock, held until the container's state is written so `rmi` cannot remove the image in
/// between. Errs with the exit code when the image cannot be used (one line printed, nothing
/// created).
fn with_image(raw: &mut RawSpec, entrypoint: Option<&str>) -> Result<Option<StoreLock>, u8> {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // With --rootfs the root is chosen: the first word is the command, `--` or not, as before.
    if raw.rootfs.is_some() || !crate::image_run::is_image_form(&argv, &raw.command) {
        if entrypoint.is_some() {
            eprintln!("cgsight: --entrypoint needs an IMAGE (launch [OPTIONS] IMAGE [CMD...])");
            return Err(EXIT_LAUNCHER);
        }
        return Ok(None);
    }
    let Some((name, args)) = raw
        .command
        .split_first()
        .map(|(n, a)| (n.clone(), a.to_vec()))
    else {
        return Ok(None);
    };
    let res = crate::images::open_store().and_then(|s| {
        let lock = s.lock()?;
        crate::image_run::apply(&s, raw, &name, entrypoint, &args).map(|()| lock)
    });
    match res {
        Ok(lock) => Ok(Some(lock)),
        Err(e @ cgsight_image::Error::NoSuchImage(_)) => {
            eprintln!("cgsight: {e} (cgsight pull {name}, or launch -- CMD for the host's root)");
            Err(EXIT_LAUNCHER)
        }
        Err(e) => Err(crate::images::fail(&e)),
    }
}

/// `-d`: the supervisor forks away into its own session with output to the log file; this
/// process waits until the command runs (or failed) and reports it.
fn detached(prepared: Prepared) -> anyhow::Result<u8> {
    let id = prepared.spec.id.clone();
    let log = prepared.store.log_path(&id);
    let logf =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let io = Detach {
        stdout: Some(logf.as_fd()),
        stderr: Some(logf.as_fd()),
        timeout: None,
    };
    let report = match startup::daemonize(&io)? {
        Forked::Child(mut n) => {
            drop(logf);
            let mut notify = |res: Result<&_, &cgsight_launcher::LaunchError>| {
                n.send(&match res {
                    Ok(_) => Report::Ready,
                    Err(e) => Report::Failed {
                        code: e.code(),
                        msg: e.to_string(),
                    },
                })
            };
            return Ok(supervisor::supervise(prepared, &mut notify).unwrap_or_else(|e| e.code()));
        }
        Forked::Parent { report, .. } => report,
    };
    match report {
        Report::Ready => {
            println!("{id}");
            Ok(0)
        }
        Report::Failed { code, msg } => {
            eprintln!("cgsight: {msg}");
            Ok(code)
        }
        Report::AlreadyServing(_) | Report::Silent | Report::TimedOut => {
            eprintln!(
                "cgsight: the container's supervisor exited before starting it (see {})",
                log.display()
            );
            Ok(EXIT_LAUNCHER)
        }
    }
}
