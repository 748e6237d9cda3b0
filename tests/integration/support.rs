//! Helpers for driving the `cgsight` binary, shared by every topic module: running it against
//! the binary's one views server, container guards, inspect, and checks that nothing is left.
#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{mpsc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use cgsight_cgroup::{Controller, Hierarchies, Version};
use cgsight_testkit::{is_mounted, unique_name, wait_for};

pub const BIN: &str = env!("CARGO_BIN_EXE_cgsight");
/// The repository (the root package's directory), for files the tests read (rules, scripts).
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Runs cgsight with the views served by this test binary's own `cgsight fs`.
pub fn cgsight(args: &[&str]) -> Output {
    cgsight_with_views(Path::new(views_mountpoint()), args)
}

/// Runs cgsight with the views at `views` (a test's own `cgsight fs` or `daemon`).
pub fn cgsight_with_views(views: &Path, args: &[&str]) -> Output {
    command(args)
        .env("CGSIGHT_FS_MOUNTPOINT", views)
        .output()
        .expect("running cgsight")
}

/// `cgsight ARGS`; a `launch` starts in [`test_netns`], so the default bridge, its veths and
/// NAT rules are made there and never on the machine's own network.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if args.first() == Some(&"launch") {
        in_test_netns(&mut cmd);
    }
    cmd
}

/// Starts `cmd` in [`test_netns`].
pub fn in_test_netns(cmd: &mut Command) {
    join_netns(cmd, test_netns());
}

/// Starts `cmd` in the network namespace `fd` names; the caller keeps `fd` open until then.
pub fn join_netns(cmd: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: setns is async-signal-safe and touches only the forked child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One network namespace per test binary for every launch (bridge mode is the default): held
/// only by a descriptor of this process, so it vanishes with the process, whatever happens.
/// Loopback is up in it, as on a host. Network tests make their own namespaces.
pub fn test_netns() -> std::os::fd::RawFd {
    static NS: OnceLock<std::os::fd::OwnedFd> = OnceLock::new();
    NS.get_or_init(|| {
        let fd: std::os::fd::OwnedFd = std::thread::spawn(|| {
            // SAFETY: unshare of this (short-lived) thread's network namespace only.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare(CLONE_NEWNET)"
            );
            std::fs::File::open("/proc/thread-self/ns/net").expect("open the test netns")
        })
        .join()
        .expect("netns thread")
        .into();
        let raw = fd.as_raw_fd();
        let mut up = Command::new("ip");
        up.args(["link", "set", "lo", "up"]);
        join_netns(&mut up, raw);
        assert!(
            up.status().expect("ip link").success(),
            "lo up in the test netns"
        );
        fd
    })
    .as_raw_fd()
}

/// One `cgsight fs --foreground` per test binary, on a private mountpoint. It is spawned from a
/// thread that never exits and carries PR_SET_PDEATHSIG, so when the test process ends (pass or
/// fail) the server gets SIGTERM and unmounts: no host daemon is left behind.
pub fn views_mountpoint() -> &'static str {
    static VIEWS: OnceLock<String> = OnceLock::new();
    VIEWS.get_or_init(|| {
        let mp = format!("/tmp/{}", unique_name("views"));
        // Not made here: `cgsight fs` makes it, and so removes it when it unmounts.
        let (tx, rx) = mpsc::channel();
        let arg = mp.clone();
        std::thread::spawn(move || {
            let mut cmd = Command::new(BIN);
            cmd.args(["fs", "--foreground", "--mountpoint", &arg]);
            cmd.args(["--io-uring", cgsight_testkit::fs_io_uring_arg()]);
            // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let _ = tx.send(child.is_ok());
            // This thread is the child's parent: it must outlive every test.
            let _keep = child;
            loop {
                std::thread::park();
            }
        });
        assert!(rx.recv().unwrap_or(false), "starting cgsight fs");
        let probe = format!("{mp}/proc/uptime");
        wait_for("cgsight fs to serve", Duration::from_secs(60), || {
            (is_mounted(Path::new(&mp)) && std::fs::read_to_string(&probe).is_ok()).then_some(())
        });
        mp
    })
}

/// A container name whose container is removed (`cgsight rm -f`) on drop, pass or fail.
pub struct Ctr {
    pub name: String,
    /// The full id, once launched through [`Ctr::launch`].
    pub id: String,
    views: PathBuf,
}

impl Ctr {
    /// Guards `name` before anything is launched under it (with the binary's views server).
    pub fn named(name: &str) -> Ctr {
        Ctr {
            name: name.to_owned(),
            id: String::new(),
            views: PathBuf::from(views_mountpoint()),
        }
    }

    /// `cgsight launch -d --name <unique name from tag> ARGS` with the views at `views`.
    pub fn launch(views: &Path, tag: &str, args: &[&str]) -> Ctr {
        // Guard first, so a half-started container is removed too.
        let mut c = Ctr {
            name: unique_name(tag),
            id: String::new(),
            views: views.to_owned(),
        };
        let mut all = vec!["launch", "-d", "--name", &c.name];
        all.extend_from_slice(args);
        let out = cgsight_with_views(views, &all);
        assert!(out.status.success(), "launch {tag}: {}", stderr(&out));
        c.id = stdout(&out).trim().to_owned();
        assert_eq!(c.id.len(), 64, "launch printed {:?}", c.id);
        c
    }

    /// The container's pid 1, as the host sees it.
    pub fn pid(&self) -> i32 {
        let out = cgsight_with_views(&self.views, &["inspect", &self.name]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
        v[0]["pid"].as_i64().expect("pid in inspect") as i32
    }

    /// `inspect`'s views health (ok, broken, hung, off).
    pub fn views_health(&self) -> String {
        let out = cgsight_with_views(&self.views, &["inspect", &self.name]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["views"].as_str().unwrap_or("").to_owned()
    }

    /// The mounts at the container's /proc/uptime, as its mount table lists them (which
    /// server's views it is bound to).
    pub fn uptime_mounts(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid()))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" /proc/uptime "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `cgsight rm -f` (what drop does).
    pub fn remove(&self) {
        let _ = cgsight_with_views(&self.views, &["rm", "-f", &self.name]);
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `cgsight launch -d --no-proc-views --name NAME -- CMD...`; returns the container id.
pub fn launch_detached(name: &str, cmd: &[&str]) -> String {
    let mut args = vec!["launch", "-d", "--no-proc-views", "--name", name, "--"];
    args.extend_from_slice(cmd);
    let o = cgsight(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

/// `cgsight launch --rm --no-proc-views --name NAME -- CMD...` in the foreground.
pub fn launch_rm(name: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["launch", "--rm", "--no-proc-views", "--name", name, "--"];
    args.extend_from_slice(cmd);
    cgsight(&args)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn inspect(name: &str) -> Option<serde_json::Value> {
    let o = cgsight(&["inspect", name]);
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v.get(0).cloned()
}

/// No cgroup of container `id` remains in any hierarchy.
pub fn assert_no_cgroup(id: &str) {
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup fs")
        .flatten()
    {
        let p = h.path().join("cgsight").join(id);
        assert!(!p.exists(), "cgroup left: {}", p.display());
    }
}

/// Nothing of container `id` remains: no state, no layers, no cgroup, no mount.
pub fn assert_gone(id: &str) {
    assert_eq!(id.len(), 64, "bad id {id:?}");
    assert!(
        !Path::new("/run/cgsight/containers").join(id).exists(),
        "state dir left"
    );
    assert!(
        !Path::new("/var/lib/cgsight/containers").join(id).exists(),
        "layers left"
    );
    assert_no_cgroup(id);
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mi.contains(id), "mount left for {id}");
}

/// No container of that name is registered (for --rm containers, which are already gone).
pub fn no_container_named(name: &str) {
    let o = cgsight(&["inspect", name]);
    assert!(!o.status.success(), "container {name} still registered");
}

/// Tests that measure how much CPU a quota gives (a busy loop must reach its quota) and tests
/// that run busy loops of their own share one machine: on a small one, a neighbour's busy
/// containers starve the measured loop below its quota (seen: 0.08 CPU of a 0.5 quota while
/// the dashboards' stress containers ran). So the measuring tests hold [`cpu_measurement`]
/// (exclusive), the busy ones [`cpu_load`] (shared with each other); every other test runs
/// beside them freely. Poisoning is ignored: a failed test must not fail the others.
static CPU: RwLock<()> = RwLock::new(());

/// Held while a test measures a busy loop against its CPU quota.
pub fn cpu_measurement() -> RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(|e| e.into_inner())
}

/// Held while a test runs busy loops (CPU load others would measure).
pub fn cpu_load() -> RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

/// The launcher's `/cgsight` parent at the highest CPU weight while held; the old weight is
/// restored on drop. Every container shares that one parent, which competes as a single
/// default-weight group against everything else on the host: on a busy machine (load 11 on 2
/// CPUs here, seen 0.14 CPU of a 0.5 quota) it gets far less than one measured container's
/// quota. A container launched with `--cpu-shares 262144` under this boost gets its whole quota,
/// so a quota test measures the quota, not the host's load. Taking the exclusive
/// [`cpu_measurement`] guard keeps two boosts from overlapping (each restores what it saw).
pub struct CgsightCpuBoost {
    file: PathBuf,
    old: String,
}

pub fn boost_cgsight_cpu_weight(_exclusive: &RwLockWriteGuard<'static, ()>) -> CgsightCpuBoost {
    let h = Hierarchies::detect().expect("cgroup hierarchies");
    let m = h.mount_for(Controller::Cpu).expect("a cpu controller");
    let (name, max) = match m.version {
        Version::V1 => ("cpu.shares", "262144"),
        Version::V2 => ("cpu.weight", "10000"),
    };
    let file = m.dir_of("/cgsight").join(name);
    let old = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_owned();
    std::fs::write(&file, max).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    CgsightCpuBoost { file, old }
}

impl Drop for CgsightCpuBoost {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.file, &self.old) {
            eprintln!("restoring {} to {}: {e}", self.file.display(), self.old);
        }
    }
}

/// `cgsight launch -d --no-proc-views FLAGS --name NAME -- CMD...`; returns the container id.
pub fn launch_detached_with(name: &str, flags: &[&str], cmd: &[&str]) -> String {
    let mut args = vec!["launch", "-d", "--no-proc-views"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--name", name, "--"]);
    args.extend_from_slice(cmd);
    let o = cgsight(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o).trim().to_owned()
}

/// The MemTotal value a container limited to `mib` MiB sees in its /proc/meminfo.
pub fn memtotal_line(mib: u64) -> String {
    format!("{} kB", mib * 1024)
}
