//! The views server as a long-lived process: the descriptors it must not keep (a caller's
//! pipes, a removed container's cgroup files and pidfds) and what it does when it runs out.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cgsight_testkit::http::try_get;
use cgsight_testkit::{
    fs_io_uring_arg, require_root, unique_name, wait_for, ChildGuard, MountGuard, TempDir,
};

use crate::support::{cgsight_with_views, memtotal_line, stderr, stdout, Ctr, BIN};

/// Open descriptors of process `pid`.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `cgsight daemon` (views + /metrics) on a private mount point, its stderr in a file;
/// SIGTERM on drop, then the mount is detached and the directory removed.
struct Daemon {
    child: ChildGuard,
    mp: PathBuf,
    log: PathBuf,
    port: u16,
    _mount: MountGuard,
    _dir: TempDir,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let dir = TempDir::new(tag);
        let mp = dir.path().join("views");
        std::fs::create_dir_all(&mp).expect("mount point");
        let log = dir.path().join("daemon.log");
        let err = std::fs::File::create(&log).expect("log file");
        let child = ChildGuard::new(
            Command::new(BIN)
                .args(["daemon", "--listen", "127.0.0.1:0", "--io-uring"])
                .arg(fs_io_uring_arg())
                .arg("--mountpoint")
                .arg(&mp)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("start cgsight daemon"),
        );
        let mut d = Daemon {
            child,
            _mount: MountGuard::new(&mp),
            mp,
            log,
            port: 0,
            _dir: dir,
        };
        d.port = wait_for("the daemon to serve", Duration::from_secs(60), || {
            if let Ok(Some(st)) = d.child.child().try_wait() {
                panic!("cgsight daemon exited: {st}\n{}", d.log_text());
            }
            let port = listening_port(&d.log_text())?;
            cgsight_fusefs::is_serving(&d.mp).then_some(port)
        });
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process serving the views: the holder's server where the daemon is a holder (its
    /// status file names it), else the daemon itself (`--io-uring on` serves in-process).
    fn server_pid(&self) -> i32 {
        let status = cgsight_fusefs::pidfile_path(&self.mp).with_extension("server");
        cgsight_fusefs::read_status(&status).map_or(self.child.pid(), |s| s.1)
    }

    fn fds(&self) -> usize {
        fd_count(self.server_pid())
    }

    fn metrics(&self) -> String {
        try_get(self.port, "/metrics", &[]).map_or_else(|e| panic!("scrape: {e}"), |r| r.text())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.pid());
        let server = nix::unistd::Pid::from_raw(self.server_pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        // A test that stopped the server may have failed before continuing it.
        let _ = nix::sys::signal::kill(server, nix::sys::signal::Signal::SIGCONT);
        // No panic here (a drop during a failed test's unwinding would abort the whole binary):
        // past the bound, the ChildGuard kills it.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(self.child.child().try_wait(), Ok(None)) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Every thread of process `pid` is stopped (SIGSTOP is acted on by each thread on its way
/// back to user space, after kill(2) has returned).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
            // The state follows the command's closing parenthesis.
            st.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    })
}

/// The port of the agent's "listening on http://127.0.0.1:PORT/metrics" line.
fn listening_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("listening on"))?;
    let rest = line.split("127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|p| *p != 0)
}

/// `launch --rm --memory {mib}m` printing the container's MemTotal line.
fn memtotal_in_container(views: &Path, mib: u64) -> String {
    let name = unique_name("fdmem");
    let _g = Ctr::named(&name);
    let mem = format!("{mib}m");
    let out = cgsight_with_views(
        views,
        &[
            "launch",
            "--rm",
            "--name",
            &name,
            "--memory",
            &mem,
            "--",
            "grep",
            "MemTotal",
            "/proc/meminfo",
        ],
    );
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn short_lived_containers_leave_no_descriptors_behind() {
    require_root!();
    let d = Daemon::start("fds");
    let base = d.fds();
    // The soak (3000 in a row, three at a time) on the host lane; under emulation (the VM
    // lanes set CGSIGHT_VM) 30 still show the sweep on that lane's cgroup layout without the
    // lane's time going to launches.
    let per_thread: u64 = if std::env::var_os("CGSIGHT_VM").is_some() {
        10
    } else {
        1000
    };
    // A few in parallel: the launches are the slow part, the daemon serves them concurrently.
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let tx = tx.clone();
            let mp = d.mp.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    let mib = 64 + (t * per_thread + i) % 64;
                    let out = memtotal_in_container(&mp, mib);
                    let _ = tx.send((mib, out));
                }
            });
        }
    });
    drop(tx);
    let mut n = 0;
    for (mib, out) in rx {
        n += 1;
        assert!(
            out.contains(&memtotal_line(mib)),
            "a {mib} MiB container saw {out:?}"
        );
    }
    assert_eq!(n, 3 * per_thread);
    let peak = d.fds();
    // The sampler's sweep (every 5 s) closes what the removed cgroups held.
    wait_for(
        "the daemon's descriptors back at their baseline",
        Duration::from_secs(60),
        || (d.fds() <= base + 8).then_some(()),
    );
    eprintln!(
        "daemon descriptors: baseline {base}, right after {n} containers {peak}, after the sweep {}",
        d.fds()
    );
}

#[test]
fn out_of_descriptors_is_counted_logged_and_recovers() {
    require_root!();
    let d = Daemon::start("fdlow");
    // A container the daemon has served, so it holds cached descriptors eviction can free.
    let before = d.fds();
    let _warm = Ctr::launch(
        &d.mp,
        "fdwarm",
        &[
            "--memory",
            "64m",
            "--",
            "sh",
            "-c",
            "cat /proc/meminfo >/dev/null; exec sleep 600",
        ],
    );
    wait_for(
        "the warm container to be served",
        Duration::from_secs(30),
        || (d.fds() > before).then_some(()),
    );
    // A soft limit far below what the daemon holds even with every cache evicted (its FUSE
    // and io_uring descriptors, sockets and kept host files): no descriptor can be opened at
    // all, whatever eviction frees. Held cgroup files and pidfds are all caches, so a limit
    // set relative to them could be evicted under and the test would depend on timing.
    let fds = d.fds();
    let soft = (fds / 2) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let pid = d.server_pid();
    // SAFETY: prlimit reads and writes the struct we own.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim) };
    assert_eq!(rc, 0, "prlimit get: {}", std::io::Error::last_os_error());
    let normal = lim;
    lim.rlim_cur = soft;
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit set: {}", std::io::Error::last_os_error());

    // The new container's view cannot be made: it gets the host's file (kept open for that),
    // not an error, and the launcher still finds the daemon serving (no second daemon).
    let starved = memtotal_in_container(&d.mp, 96);
    assert!(
        starved.starts_with("MemTotal:") && !starved.contains(&memtotal_line(96)),
        "with no descriptor to open, the view is the host file: {starved:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let on_mp = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == d.mp.to_str())
        .count();
    assert_eq!(on_mp, 1, "a second daemon was mounted over the starved one");
    wait_for(
        "the exhaustion to be logged",
        Duration::from_secs(10),
        || {
            d.log_text()
                .contains("out of file descriptors")
                .then_some(())
        },
    );
    assert!(d.fds() <= fds, "descriptors grew past the limit");

    // Descriptors come back (the limit is raised again): views work at once.
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &normal, std::ptr::null_mut()) };
    assert_eq!(
        rc,
        0,
        "prlimit restore: {}",
        std::io::Error::last_os_error()
    );
    let out = memtotal_in_container(&d.mp, 80);
    assert!(out.contains(&memtotal_line(80)), "after recovery: {out:?}");
    let m = d.metrics();
    let counted = m
        .lines()
        .filter(|l| {
            l.starts_with("cgsight_fs_fallbacks_total{") && l.contains("reason=\"fd_exhaustion\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(counted > 0, "no fd_exhaustion fallback counted:\n{m}");
}

#[test]
fn ps_and_inspect_show_a_container_whose_views_are_broken() {
    require_root!();
    let mut d = Daemon::start("vhealth");
    let c = Ctr::launch(&d.mp, "vhealth", &["--", "sleep", "600"]);
    let off = Ctr::launch(
        &d.mp,
        "vhealth-off",
        &["--no-proc-views", "--", "sleep", "600"],
    );
    let ps_row = |name: &str| {
        let ps = stdout(&crate::support::cgsight(&["ps"]));
        ps.lines()
            .find(|l| l.contains(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(c.views_health(), "ok");
    assert_eq!(off.views_health(), "off");
    assert!(!ps_row(&c.name).contains("views"), "{}", ps_row(&c.name));
    let server = d.server_pid();
    let pid = nix::unistd::Pid::from_raw(server);
    let signal = |s| nix::sys::signal::kill(pid, s).expect("signal the daemon");
    // Stopped: reads wait forever; inspect and ps say so within their bound, and do not hang.
    signal(nix::sys::signal::Signal::SIGSTOP);
    wait_for("the daemon to stop", Duration::from_secs(30), || {
        all_threads_stopped(server).then_some(())
    });
    assert_eq!(
        c.views_health(),
        "hung",
        "{}\n{}",
        c.uptime_mounts(),
        d.log_text()
    );
    assert!(
        ps_row(&c.name).contains("running (views hung)"),
        "{}",
        ps_row(&c.name)
    );
    signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(c.views_health(), "ok");
    // Killed, the holder too where there is one (its server dies with it): the container's
    // binds are dead.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.pid()),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = d.child.wait_timeout(Duration::from_secs(10));
    assert_eq!(c.views_health(), "broken");
    assert!(
        ps_row(&c.name).contains("running (views broken)"),
        "{}",
        ps_row(&c.name)
    );
    // The container without views is as it was.
    assert_eq!(off.views_health(), "off");
    assert!(
        !ps_row(&off.name).contains("views"),
        "{}",
        ps_row(&off.name)
    );
}

#[test]
fn a_daemonizing_fs_keeps_none_of_its_callers_descriptors() {
    require_root!();
    let dir = TempDir::new("fdinherit");
    let mp = dir.path().join("views");
    std::fs::create_dir_all(&mp).expect("mount point");
    let _mount = MountGuard::new(&mp);
    let pidfile = dir.path().join("fs.pid");
    // The shell leaks its stdout (a pipe we read to EOF) to `cgsight fs` as descriptor 9, as
    // scripts do; the daemon must not keep it, or the caller never sees EOF.
    let script = format!(
        "exec \"$0\" fs --mountpoint '{}' --pidfile '{}' --io-uring {} 9>&1",
        mp.display(),
        pidfile.display(),
        fs_io_uring_arg()
    );
    let mut sh = ChildGuard::new(
        Command::new("sh")
            .args(["-c", &script, BIN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh"),
    );
    let mut out = sh.child().stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let status = sh.wait_timeout(Duration::from_secs(60));
    // Stop the daemon on every path from here on.
    struct StopDaemon(PathBuf);
    impl Drop for StopDaemon {
        fn drop(&mut self) {
            if let Some(pid) = std::fs::read_to_string(&self.0)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let end = std::time::Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < end
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    let _stop = StopDaemon(pidfile.clone());
    assert!(status.success(), "cgsight fs: {status}");
    assert!(cgsight_fusefs::is_serving(&mp), "the fs serves");
    // Generous: EOF comes as soon as the parent exited if the daemon holds nothing of ours.
    let eof = rx.recv_timeout(Duration::from_secs(30));
    assert!(
        eof.is_ok(),
        "the caller's pipe never reached EOF: the daemon kept an inherited descriptor"
    );
}

/// A stopped (or hung) views server must not hang `launch`: the container starts within a
/// few seconds without views (a warning says why), and leaves no record behind with --rm; with
/// --require-proc-views it is refused, leaving nothing.
#[test]
fn a_launch_with_a_stopped_views_server_starts_without_views() {
    require_root!();
    let d = Daemon::start("vstopped");
    let server = d.server_pid();
    let pid = nix::unistd::Pid::from_raw(server);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    struct Cont(nix::unistd::Pid);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    let _cont = Cont(pid);
    wait_for("the server to stop", Duration::from_secs(30), || {
        all_threads_stopped(server).then_some(())
    });
    let name = cgsight_testkit::unique_name("vstopped");
    let _g = Ctr::named(&name);
    // SIGKILL past a generous bound: a hang is the failure, not a slow start.
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "120", BIN, "launch", "--rm", "--name", &name])
        .args(["--memory", "96m", "--", "grep", "MemTotal", "/proc/meminfo"])
        .env("CGSIGHT_FS_MOUNTPOINT", &d.mp);
    // In the test binary's network namespace, as every launch: the default bridge, its NAT
    // table and ip_forward are made there, never on the machine.
    crate::support::in_test_netns(&mut cmd);
    let t0 = std::time::Instant::now();
    let out = cmd.output().expect("run launch");
    eprintln!("launch with a stopped views server: {:?}", t0.elapsed());
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "launch: {:?}\n{o}\n{e}", out.status);
    assert!(e.contains("does not answer"), "no warning: {e}");
    let log = cgsight_fusefs::log_path(&cgsight_fusefs::pidfile_path(&d.mp));
    assert!(
        e.contains(&log.display().to_string()),
        "the warning names {}: {e}",
        log.display()
    );
    assert!(
        o.starts_with("MemTotal:") && !o.contains(&memtotal_line(96)),
        "{o}"
    );
    let ps = stdout(&crate::support::cgsight(&["ps", "-a"]));
    assert!(!ps.contains(&name), "a record was left: {ps}");

    // --require-proc-views refuses instead: exit 125, one error line, nothing left.
    let strict = cgsight_testkit::unique_name("vstrict");
    let _g = Ctr::named(&strict);
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "120", BIN, "launch", "-d", "--name", &strict])
        .args(["--require-proc-views", "--", "sleep", "60"])
        .env("CGSIGHT_FS_MOUNTPOINT", &d.mp);
    crate::support::in_test_netns(&mut cmd);
    let out = cmd.output().expect("run launch");
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("cgsight:")).collect();
    assert!(
        errors.len() == 1 && errors.iter().all(|l| l.contains("--require-proc-views")),
        "{e}"
    );
    let ps = stdout(&crate::support::cgsight(&["ps", "-a"]));
    assert!(!ps.contains(&strict), "a record was left: {ps}");
}
