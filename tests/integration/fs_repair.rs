//! Repair after a total loss: the views server (and anything it started) killed, a new
//! `cgsight fs` on the same mount point binds its live views over the running containers'
//! dead ones, inside their mount namespaces, without restarting them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cgsight_testkit::{fs_io_uring_arg, require_root, wait_for, ChildGuard, MountGuard, TempDir};

use crate::support::{cgsight_with_views, memtotal_line, stderr, stdout, Ctr, BIN};

/// The parent pid in /proc/PID/stat (the field after the state, past the command's ')').
fn ppid_of(pid: i32) -> Option<i32> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = st.rsplit_once(") ")?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// `root` and every process descending from it.
fn process_tree(root: i32) -> Vec<i32> {
    let links: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| Some((p, ppid_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![root];
    let mut i = 0;
    while let Some(&p) = tree.get(i) {
        tree.extend(links.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// Gone, or a zombie (it holds no descriptor any more).
fn dead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
        st.rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
    })
}

/// SIGKILL to `pid` and every descendant (the whole tree is listed before anything is killed,
/// so no child escapes by being reparented); returns once all are dead.
fn kill_tree(pid: i32) {
    let tree = process_tree(pid);
    for p in &tree {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_for(
        "the killed server's processes to die",
        Duration::from_secs(30),
        || tree.iter().all(|p| dead(*p)).then_some(()),
    );
}

/// `cgsight fs --foreground` on `mp`, stderr appended to `log`; on drop, SIGTERM and then
/// SIGKILL to whatever of its process tree is left.
struct FsServer {
    child: ChildGuard,
    log: PathBuf,
    /// Killed and reaped already: its pid may belong to another process now.
    gone: bool,
}

impl FsServer {
    fn start(mp: &Path, log: &Path) -> FsServer {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "fs",
            "--foreground",
            "--io-uring",
            fs_io_uring_arg(),
            "--mountpoint",
        ])
        .arg(mp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut s = FsServer {
            child: ChildGuard::new(cmd.spawn().expect("start cgsight fs")),
            log: log.to_owned(),
            gone: false,
        };
        wait_for("cgsight fs to serve", Duration::from_secs(60), || {
            if let Ok(Some(st)) = s.child.child().try_wait() {
                panic!("cgsight fs exited: {st}\n{}", s.log_text());
            }
            cgsight_fusefs::is_serving(mp).then_some(())
        });
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9 of the server and everything it started; the mount's connection dies with them.
    fn kill_all(&mut self) {
        kill_tree(self.child.pid());
        let _ = self.child.wait_timeout(Duration::from_secs(10));
        self.gone = true;
    }
}

impl Drop for FsServer {
    fn drop(&mut self) {
        if self.gone {
            return;
        }
        // Listed while the server is still unreaped (its pid cannot be reused meanwhile).
        let tree = process_tree(self.child.pid());
        if let Some(&pid) = tree.first() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        // No panic in a drop (it may run while a failed test unwinds): bounded, then killed.
        let end = Instant::now() + Duration::from_secs(10);
        while tree.iter().any(|p| !dead(*p)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in tree.iter().filter(|p| !dead(**p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn exec(mp: &Path, c: &Ctr, cmd: &[&str]) -> Output {
    let mut args = vec!["exec", c.name.as_str()];
    args.extend_from_slice(cmd);
    cgsight_with_views(mp, &args)
}

#[test]
fn views_come_back_in_running_containers_after_the_server_is_killed_and_started_again() {
    require_root!();
    let dir = TempDir::new("repair");
    let mp = dir.path().join("views");
    std::fs::create_dir_all(&mp).expect("mount point");
    let _mount = MountGuard::new(&mp);
    let log = dir.path().join("fs.log");
    let mut first = FsServer::start(&mp, &log);
    let sleep = ["--", "sleep", "600"];
    let big = Ctr::launch(
        &mp,
        "repair256",
        &[&["--memory", "256m"], &sleep[..]].concat(),
    );
    let small = Ctr::launch(
        &mp,
        "repair128",
        &[&["--memory", "128m"], &sleep[..]].concat(),
    );
    let off = Ctr::launch(
        &mp,
        "repairoff",
        &[&["--no-proc-views"], &sleep[..]].concat(),
    );
    let limited = [(&big, 256), (&small, 128)];
    for (c, mib) in limited {
        let out = exec(&mp, c, &["cat", "/proc/meminfo"]);
        assert!(
            stdout(&out).contains(&memtotal_line(mib)),
            "{} before the kill: {}{}",
            c.name,
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(c.views_health(), "ok");
    }
    assert_eq!(off.views_health(), "off");
    let off_mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", off.pid()))
        .expect("the container's mountinfo");

    first.kill_all();
    for (c, _) in limited {
        let out = exec(&mp, c, &["cat", "/proc/meminfo"]);
        let err = stderr(&out);
        assert!(
            !out.status.success()
                && (err.contains("not connected") || err.contains("connection abort")),
            "{} after the kill: {}{err}",
            c.name,
            stdout(&out)
        );
        assert_eq!(c.views_health(), "broken");
    }

    let t = Instant::now();
    let second = FsServer::start(&mp, &log);
    for (c, mib) in limited {
        let mut last = String::new();
        let seen = wait_for_or_none(Duration::from_secs(10), || {
            let out = exec(&mp, c, &["cat", "/proc/meminfo"]);
            last = format!("{}{}", stdout(&out), stderr(&out));
            last.contains(&memtotal_line(mib)).then_some(())
        });
        assert!(
            seen.is_some(),
            "{} never saw its {mib} MiB again: {last}\nits /proc/uptime mounts:\n{}\nserver log:\n{}",
            c.name,
            c.uptime_mounts(),
            second.log_text()
        );
    }
    eprintln!(
        "views back in both running containers {} ms after the new server was started",
        t.elapsed().as_millis()
    );
    let log = second.log_text();
    for l in log.lines().filter(|l| l.contains("repaired")) {
        eprintln!("server: {l}");
    }
    for (c, _) in limited {
        assert!(
            log.lines()
                .any(|l| l.contains("views repaired") && l.contains(&c.name)),
            "the new server did not log {}'s repair:\n{log}",
            c.name
        );
    }
    assert!(
        !log.contains(&off.name),
        "the server acted on {}:\n{log}",
        off.name
    );
    for (c, _) in limited {
        assert_eq!(c.views_health(), "ok", "{}", second.log_text());
        let up = exec(&mp, c, &["uptime"]);
        assert!(up.status.success(), "uptime in {}: {}", c.name, stderr(&up));
        let st = exec(&mp, c, &["cat", "/proc/stat"]);
        assert!(
            st.status.success() && stdout(&st).starts_with("cpu "),
            "/proc/stat in {}: {}",
            c.name,
            stderr(&st)
        );
        // One live bind at each view, the dead ones detached (not stacked underneath).
        let mounts = c.uptime_mounts();
        assert_eq!(mounts.lines().count(), 1, "{}: {mounts}", c.name);
    }
    // The container without views: untouched.
    assert_eq!(off.views_health(), "off");
    let now = std::fs::read_to_string(format!("/proc/{}/mountinfo", off.pid())).expect("mountinfo");
    assert_eq!(
        now, off_mounts,
        "the --no-proc-views container's mounts changed"
    );
    let host = exec(&mp, &off, &["cat", "/proc/meminfo"]);
    assert!(host.status.success(), "{}", stderr(&host));
}

/// Like [`wait_for`], but None past the bound instead of a panic (so the caller can say why).
fn wait_for_or_none<T>(bound: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn views_come_back_in_a_userns_auto_container() {
    require_root!();
    let dir = TempDir::new("repairns");
    let mp = dir.path().join("views");
    std::fs::create_dir_all(&mp).expect("mount point");
    let _mount = MountGuard::new(&mp);
    let log = dir.path().join("fs.log");
    let mut first = FsServer::start(&mp, &log);
    let c = Ctr::launch(
        &mp,
        "repairns",
        &["--userns", "auto", "--memory", "192m", "--", "sleep", "600"],
    );
    let meminfo = || {
        let out = exec(&mp, &c, &["cat", "/proc/meminfo"]);
        format!("{}{}", stdout(&out), stderr(&out))
    };
    assert!(meminfo().contains(&memtotal_line(192)), "{}", meminfo());
    first.kill_all();
    assert_eq!(c.views_health(), "broken");
    let t = Instant::now();
    let second = FsServer::start(&mp, &log);
    let back = wait_for_or_none(Duration::from_secs(10), || {
        meminfo().contains(&memtotal_line(192)).then_some(())
    });
    assert!(
        back.is_some(),
        "the userns container never saw its 192 MiB again: {}\n{}\nserver log:\n{}",
        meminfo(),
        c.uptime_mounts(),
        second.log_text()
    );
    eprintln!(
        "views back in the --userns auto container {} ms after the new server was started",
        t.elapsed().as_millis()
    );
    assert_eq!(c.views_health(), "ok");
}
