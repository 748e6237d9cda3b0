//! Container lifecycle verbs: launch, ps, exec, stop, kill, rm, inspect, logs.
//! The work is in the cgsight-launcher crate; this file maps flags and exit codes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cgsight_cgroup::{Cgroup, CpuList, Hierarchies, Managed};
use cgsight_launcher::exec::ExecRequest;
use cgsight_launcher::process::{self, LaunchError};
use cgsight_launcher::spec::{self, RawSpec};
use cgsight_launcher::state::{State, Status, Store};
use cgsight_launcher::EXIT_LAUNCHER;
use nix::sys::signal::Signal;

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
    /// Network: none (own namespace, loopback up) or host.
    #[arg(long, alias = "network")]
    net: Option<String>,
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
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

fn host_cpus() -> CpuList {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| CpuList::parse(s.trim()))
        .unwrap_or_else(|| CpuList::parse("0").expect("literal cpu list"))
}

fn fail(e: &LaunchError) -> u8 {
    eprintln!("cgsight: {}", e.msg);
    e.code
}

pub fn launch(a: LaunchArgs) -> anyhow::Result<u8> {
    let raw = RawSpec {
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
        tty: a.tty,
        interactive: a.interactive,
        init: a.init,
        rm: a.rm,
        detach: a.detach,
        no_proc_views: a.no_proc_views,
        command: a.command,
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
    let prepared = match process::prepare(spec, Store::from_env(), &exe) {
        Ok(p) => p,
        Err(e) => return Ok(fail(&e)),
    };
    if !detach {
        return Ok(match process::supervise(prepared, &mut |_| {}) {
            Ok(c) => c,
            Err(e) => fail(&e),
        });
    }
    detached(prepared)
}

/// `-d`: the supervisor forks away into its own session with output to the log file; this
/// process waits until the command runs (or failed) and reports it.
fn detached(prepared: process::Prepared) -> anyhow::Result<u8> {
    let id = prepared.spec.id.clone();
    let log = prepared.store.log_path(&id);
    let logf =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut fds = [0i32; 2];
    // SAFETY: valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let (r, w) = (fds[0], fds[1]);
    // SAFETY: single-threaded; the child continues as the supervisor.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        use std::os::fd::AsRawFd;
        // SAFETY: plain fd and session syscalls in the forked child.
        unsafe {
            libc::close(r);
            libc::setsid();
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(logf.as_raw_fd(), 1);
            libc::dup2(logf.as_raw_fd(), 2);
        }
        let mut w = Some(w);
        let mut notify = |res: Result<&State, &LaunchError>| {
            if let Some(fd) = w.take() {
                let msg = match res {
                    Ok(_) => vec![0u8],
                    Err(e) => [&[e.code][..], e.msg.as_bytes()].concat(),
                };
                // SAFETY: writing a small buffer to our pipe end, then closing it.
                unsafe {
                    libc::write(fd, msg.as_ptr().cast(), msg.len());
                    libc::close(fd);
                }
            }
        };
        return Ok(process::supervise(prepared, &mut notify).unwrap_or_else(|e| e.code));
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(w) };
    let mut f = unsafe {
        use std::os::fd::FromRawFd;
        std::fs::File::from_raw_fd(r)
    };
    // One message, written in one write (far below PIPE_BUF): read it, do not wait for EOF.
    // With --init the container's pid 1 is a fork of the supervisor that inherited the write
    // end, so EOF would only come when the container exits.
    let mut buf = vec![0u8; 4096];
    let n = loop {
        match f.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.unwrap_or(0),
        }
    };
    buf.truncate(n);
    match buf.split_first() {
        Some((0, _)) => {
            println!("{id}");
            Ok(0)
        }
        Some((&code, msg)) => {
            eprintln!("cgsight: {}", String::from_utf8_lossy(msg));
            Ok(code)
        }
        None => {
            eprintln!(
                "cgsight: the container's supervisor exited before starting it (see {})",
                log.display()
            );
            Ok(EXIT_LAUNCHER)
        }
    }
}

fn find(q: &str) -> anyhow::Result<(Store, State)> {
    let store = Store::from_env();
    let st = store.find(q)?;
    Ok((store, st))
}

#[derive(clap::Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only print ids.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// Runs `f` on each named container. A name that matches none is reported and, like an `f`
/// that returns non-zero, makes the exit code 1; the remaining names are still processed.
fn for_each_container(
    queries: &[String],
    mut f: impl FnMut(Store, State) -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let mut rc = 0;
    for q in queries {
        match find(q) {
            Ok((store, st)) => {
                if f(store, st)? != 0 {
                    rc = 1;
                }
            }
            Err(e) => {
                eprintln!("cgsight: {e}");
                rc = 1;
            }
        }
    }
    Ok(rc)
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", units[i])
}

fn ago(t: f64) -> String {
    let s = (cgsight_launcher::state::now() - t).max(0.0) as u64;
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

/// CPU % is measured over 100 ms (two cgroup usage samples), 100 % = one CPU.
pub fn ps(a: PsArgs) -> anyhow::Result<u8> {
    let store = Store::from_env();
    let list: Vec<State> = store
        .list()
        .into_iter()
        .filter(|s| a.all || s.status == Status::Running)
        .collect();
    if a.quiet {
        for s in &list {
            println!("{}", &s.id[..12]);
        }
        return Ok(0);
    }
    let h = Hierarchies::detect()?;
    let cgs: Vec<Option<Cgroup>> = list
        .iter()
        .map(|s| (s.status == Status::Running).then(|| Cgroup::at_path(&h, &s.cgroup_path)))
        .collect();
    let first: Vec<Option<u64>> = cgs
        .iter()
        .map(|c| {
            c.as_ref()
                .and_then(|c| c.cpu_usage().ok())
                .map(|u| u.total_ns)
        })
        .collect();
    let t0 = Instant::now();
    if cgs.iter().any(Option::is_some) {
        thread::sleep(Duration::from_millis(100));
    }
    let dt = t0.elapsed().as_nanos() as f64;
    println!(
        "{:<12}  {:<24}  {:<16}  {:>7}  {:>21}  {:>6}  CREATED",
        "ID", "NAME", "STATUS", "PID", "MEM USAGE / LIMIT", "CPU %"
    );
    for ((s, cg), f) in list.iter().zip(&cgs).zip(&first) {
        let (mem, cpu) = match cg {
            Some(c) => {
                let mem = c.memory().ok().map_or("-".to_string(), |m| {
                    let lim = c
                        .effective_memory_limit()
                        .ok()
                        .flatten()
                        .map_or("unlimited".to_string(), human_bytes);
                    format!("{} / {lim}", human_bytes(m.usage))
                });
                let cpu = match (f, c.cpu_usage().ok()) {
                    (Some(a), Some(b)) => {
                        format!("{:.1}", (b.total_ns.saturating_sub(*a)) as f64 / dt * 100.0)
                    }
                    _ => "-".into(),
                };
                (mem, cpu)
            }
            None => ("-".into(), "-".into()),
        };
        let status = match (s.status, s.exit_code, s.supervisor_dead) {
            (_, _, true) => "dead".to_string(),
            (Status::Exited, Some(c), _) => format!("exited ({c})"),
            (st, _, _) => st.to_string(),
        };
        let pid = match s.status {
            Status::Running => s.pid.map_or("-".into(), |p| p.to_string()),
            _ => "-".into(),
        };
        println!(
            "{:<12}  {:<24}  {:<16}  {:>7}  {:>21}  {:>6}  {}",
            &s.id[..12],
            s.name,
            status,
            pid,
            mem,
            cpu,
            ago(s.created)
        );
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep stdin attached.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Environment variable KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<PathBuf>,
    /// Container id (or unique prefix) or name.
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn exec(a: ExecArgs) -> anyhow::Result<u8> {
    let (_, st) = match find(&a.container) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cgsight: {e}");
            return Ok(EXIT_LAUNCHER);
        }
    };
    let mut env = Vec::new();
    for e in &a.env {
        match spec::parse_env(e, |k| std::env::var(k).ok()) {
            Ok(Some(kv)) => env.push(kv),
            Ok(None) => {}
            Err(e) => {
                eprintln!("cgsight: {e}");
                return Ok(EXIT_LAUNCHER);
            }
        }
    }
    let req = ExecRequest {
        command: a.command,
        tty: a.tty,
        interactive: a.interactive,
        env,
        workdir: a.workdir,
    };
    Ok(match cgsight_launcher::exec::exec(&st, &req) {
        Ok(c) => c,
        Err(e) => fail(&e),
    })
}

/// Waits until the container is no longer running (its supervisor wrote the exit, died, or
/// removed the state with --rm).
fn wait_exited(store: &Store, id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match store.load(id) {
            Ok(s) if s.status == Status::Running || s.status == Status::Created => {}
            _ => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn kill_cgroup(st: &State) {
    if let Ok(h) = Hierarchies::detect() {
        let _ = Managed::open(&h, &st.cgroup_path).kill_all(Duration::from_secs(10));
    }
}

#[derive(clap::Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn stop(a: StopArgs) -> anyhow::Result<u8> {
    for_each_container(&a.containers, |store, st| {
        if st.status == Status::Running {
            if let Some(p) = st.pid {
                // SAFETY: kill with a pid and signal number.
                unsafe { libc::kill(p, libc::SIGTERM) };
            }
            if !wait_exited(&store, &st.id, Duration::from_secs(a.time)) {
                kill_cgroup(&st);
                wait_exited(&store, &st.id, Duration::from_secs(10));
            }
        }
        println!("{}", st.name);
        Ok(0)
    })
}

#[derive(clap::Args)]
pub struct KillArgs {
    /// Signal name or number.
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("invalid signal number {n}");
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

pub fn kill(a: KillArgs) -> anyhow::Result<u8> {
    let sig = match parse_signal(&a.signal) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cgsight: {e}");
            return Ok(EXIT_LAUNCHER);
        }
    };
    for_each_container(&a.containers, |_, st| {
        if st.status != Status::Running {
            eprintln!("cgsight: container {} is not running", st.name);
            return Ok(1);
        }
        let mut rc = 0;
        if let Some(p) = st.pid {
            // SAFETY: kill with a pid and signal number.
            if unsafe { libc::kill(p, sig) } != 0 {
                eprintln!("cgsight: kill {p}: {}", std::io::Error::last_os_error());
                rc = 1;
            }
        }
        println!("{}", st.name);
        Ok(rc)
    })
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Removes everything a container owns; also cleans up after a supervisor that died.
fn remove(store: &Store, st: &State) -> anyhow::Result<()> {
    if let Ok(h) = Hierarchies::detect() {
        Managed::open(&h, &st.cgroup_path)
            .kill_and_remove()
            .with_context(|| format!("removing cgroup {}", st.cgroup_path))?;
    }
    let d = store.container_dir(&st.id);
    match std::fs::remove_dir_all(&d) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", d.display()))
        }
        _ => {}
    }
    store.remove_state(&st.id)?;
    Ok(())
}

pub fn rm(a: RmArgs) -> anyhow::Result<u8> {
    for_each_container(&a.containers, |store, st| {
        if st.status == Status::Running {
            if !a.force {
                eprintln!(
                    "cgsight: container {} is running: stop it first or use rm -f",
                    st.name
                );
                return Ok(1);
            }
            kill_cgroup(&st);
            wait_exited(&store, &st.id, Duration::from_secs(10));
            // Let the supervisor finish its own cleanup before we remove what is left.
            let deadline = Instant::now() + Duration::from_secs(10);
            while cgsight_launcher::state::alive(st.supervisor_pid, st.supervisor_start)
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(10));
            }
        }
        match remove(&store, &st) {
            Ok(()) => {
                println!("{}", st.name);
                Ok(0)
            }
            Err(e) => {
                eprintln!("cgsight: {e:#}");
                Ok(1)
            }
        }
    })
}

#[derive(clap::Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<u8> {
    let h = Hierarchies::detect()?;
    let mut out = Vec::new();
    let rc = for_each_container(&a.containers, |store, st| {
        let m = Managed::open(&h, &st.cgroup_path);
        let dir = store.container_dir(&st.id);
        let mut v = serde_json::to_value(&st)?;
        // Docker's names too, for scripts written against `docker inspect`.
        v["OOMKilled"] = st.oom_killed.into();
        v["ExitCode"] = st.exit_code.into();
        v["pids"] = serde_json::to_value(m.all_procs())?;
        v["cgroup_dirs"] = serde_json::to_value(m.dirs())?;
        v["paths"] = serde_json::json!({
            "state": store.state_path(&st.id).join("state.json"),
            "root": dir,
            "upper": dir.join("upper"),
            "work": dir.join("work"),
            "merged": dir.join("merged"),
            "log": store.log_path(&st.id),
        });
        if st.status == Status::Running {
            if let Ok(mem) = m.cgroup().memory() {
                v["memory_usage"] = mem.usage.into();
            }
        }
        out.push(v);
        Ok(0)
    })?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(rc)
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Follow the output until the container exits.
    #[arg(short = 'f', long)]
    follow: bool,
    container: String,
}

pub fn logs(a: LogsArgs) -> anyhow::Result<u8> {
    let (store, st) = find(&a.container)?;
    let p = store.log_path(&st.id);
    let mut f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("container {} has no log (only -d containers log)", st.name)
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", p.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut pos = 0u64;
    loop {
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        out.write_all(&buf)?;
        out.flush()?;
        if !a.follow {
            return Ok(0);
        }
        let running = matches!(store.load(&st.id), Ok(s) if s.status == Status::Running);
        if !running && buf.is_empty() {
            return Ok(0);
        }
        if buf.is_empty() {
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reserved: the init runs in-process in the launcher (no re-exec needed).
#[derive(clap::Args)]
pub struct InitArgs {}

pub fn init(_a: InitArgs) -> anyhow::Result<u8> {
    bail!("__init is internal: use `cgsight launch --init`")
}
