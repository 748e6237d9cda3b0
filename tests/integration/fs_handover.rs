//! The views outlive their server: a killed, restarted or upgraded `cgsight fs` server never
//! breaks a running container's /proc views. The holder keeps the mount's /dev/fuse
//! descriptor and hands it to each new server; where the kernel has FUSE_NOTIFY_RESEND
//! (6.9+) not one read fails, elsewhere (the 6.1 VM lanes) a reader caught by a kill -9
//! fails once at most.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cgsight_testkit::http::try_get;
use cgsight_testkit::{require_root, spawn_listening, wait_for, ChildGuard, MountGuard, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{stderr, Ctr, BIN};

/// Readers per container.
const READERS: usize = 8;

/// Launches a container of `mib` MiB running [`READER`] with its control directory in `dir`.
fn reader_container(views: &Path, dir: &Path, mib: u64) -> (Ctr, PathBuf) {
    let ctl = dir.join(format!("ctl-{mib}"));
    std::fs::create_dir(&ctl).expect("ctl dir");
    let vol = format!("{}:/ctl", ctl.display());
    let kb = (mib * 1024).to_string();
    let c = Ctr::launch(
        views,
        "handover",
        &[
            "--memory",
            &format!("{mib}m"),
            "-v",
            &vol,
            "--",
            "sh",
            "-c",
            READER,
            "sh",
            &kb,
        ],
    );
    (c, ctl)
}

/// Stops the readers of `ctl` and returns their `(ok, failed, wrong)` counts and any errors.
fn reader_results(ctl: &Path) -> (Vec<(u64, u64, u64)>, String) {
    std::fs::write(ctl.join("stop"), "").expect("stop file");
    let lines: Vec<String> = wait_for("the readers' results", Duration::from_secs(120), || {
        let r: Vec<String> = (1..=READERS)
            .filter_map(|i| std::fs::read_to_string(ctl.join(format!("r.{i}"))).ok())
            .collect();
        (r.len() == READERS).then_some(r)
    });
    let errors: String = (1..=READERS)
        .filter_map(|i| std::fs::read_to_string(ctl.join(format!("err.{i}"))).ok())
        .collect();
    let counts = lines
        .iter()
        .map(|l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (
                n.get(1).copied().unwrap_or(0),
                n.get(2).copied().unwrap_or(u64::MAX),
                n.get(3).copied().unwrap_or(u64::MAX),
            )
        })
        .collect();
    (counts, errors)
}

/// Every view each reader loops over; a read that fails counts as failed, a MemTotal that is
/// not the container's as wrong. Each reader writes `ID OK FAILED WRONG` once /ctl/stop exists.
const READER: &str = r#"kb=$1
reader() {
  ok=0; failed=0; wrong=0
  while [ ! -e /ctl/stop ]; do
    for f in meminfo cpuinfo stat uptime loadavg diskstats swaps vmstat; do
      if cat /proc/$f >/dev/null 2>>/ctl/err.$1; then ok=$((ok+1)); else failed=$((failed+1)); fi
    done
    if m=$(grep MemTotal /proc/meminfo 2>>/ctl/err.$1); then
      case "$m" in *" $kb kB") ;; *) wrong=$((wrong+1)); echo "$m" >>/ctl/err.$1;; esac
    else failed=$((failed+1)); fi
  done
  echo "$1 $ok $failed $wrong" >/ctl/r.$1
}
i=0
while [ $i -lt 8 ]; do i=$((i+1)); reader $i & done
wait
"#;

/// `cgsight fs --foreground` (the holder) started from `exe`, its log in the test directory.
struct Holder {
    child: ChildGuard,
    mp: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
}

impl Holder {
    fn start(exe: &Path, dir: &Path) -> Holder {
        let mp = dir.join("views");
        let pidfile = dir.join("fs.pid");
        let log = dir.join("fs.log");
        let child = ChildGuard::new(
            Command::new(exe)
                .args(["fs", "--foreground", "--mountpoint"])
                .arg(&mp)
                .arg("--pidfile")
                .arg(&pidfile)
                .stdin(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("start cgsight fs"),
        );
        let h = Holder {
            child,
            mp,
            pidfile,
            log,
        };
        wait_for("the holder to serve", Duration::from_secs(60), || {
            (cgsight_fusefs::is_serving(&h.mp) && h.status().is_some()).then_some(())
        });
        h
    }

    /// (sequence, server pid, last change).
    fn status(&self) -> Option<(u64, i32, String)> {
        cgsight_fusefs::read_status(&self.pidfile.with_extension("server"))
    }

    fn server(&self) -> i32 {
        self.status().map_or(0, |s| s.1)
    }

    /// Waits for the status to move past `seq` with `note`; the time it took.
    fn wait_change(&self, seq: u64, note: &str) -> Duration {
        let t = Instant::now();
        wait_for(note, Duration::from_secs(60), || {
            self.status()
                .filter(|s| s.0 > seq && s.2 == note)
                .map(|_| ())
        });
        t.elapsed()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SIGTERM stops the server and unmounts; past the bound the guard kills the holder,
        // and its server dies with it.
        let _ = kill(Pid::from_raw(self.child.pid()), Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        while matches!(self.child.child().try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether the running kernel has FUSE_NOTIFY_RESEND (Linux 6.9+).
fn kernel_has_resend() -> bool {
    let rel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 9)
}

/// A host-side read through the mount works (the server answers).
fn answers(mp: &Path) -> bool {
    matches!(
        cgsight_fusefs::read_bounded(&mp.join("proc/meminfo"), Duration::from_secs(5)),
        cgsight_fusefs::Probe::Read
    )
}

#[test]
fn readers_see_their_container_through_kill_restart_and_upgrade_of_the_server() {
    require_root!();
    let dir = TempDir::new("handover");
    // The installed binary the holder runs, replaced by a different copy for the upgrade.
    let exe = dir.path().join("cgsight");
    std::fs::copy(BIN, &exe).expect("copy the binary");
    let h = Holder::start(&exe, dir.path());
    let _mount = MountGuard::new(&h.mp);

    let limits = [256u64, 128, 192];
    let (ctrs, ctls): (Vec<Ctr>, Vec<PathBuf>) = limits
        .iter()
        .map(|&mib| reader_container(&h.mp, dir.path(), mib))
        .unzip();
    let settle = || std::thread::sleep(Duration::from_secs(1));
    settle();

    // kill -9 of the serving process: the holder starts another at once.
    let (seq, old, _) = h.status().expect("status");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill -9 the server");
    let restarted = h.wait_change(seq, "restarted");
    let t = Instant::now();
    wait_for("the views to answer", Duration::from_secs(30), || {
        answers(&h.mp).then_some(())
    });
    eprintln!(
        "kill -9: new server after {:?}, answering {:?} later",
        restarted,
        t.elapsed()
    );
    assert_ne!(h.server(), old);
    settle();

    // --upgrade to a different copy of the binary, installed over the old one by rename.
    let staged = dir.path().join("cgsight.new");
    std::fs::copy(BIN, &staged).expect("copy the new binary");
    std::fs::rename(&staged, &exe).expect("install the new binary");
    let before = h.server();
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["fs", "--upgrade", "--mountpoint"])
        .arg(&h.mp)
        .arg("--pidfile")
        .arg(&h.pidfile)
        .output()
        .expect("cgsight fs --upgrade");
    assert!(out.status.success(), "--upgrade: {}", stderr(&out));
    eprintln!("--upgrade took {:?}", t.elapsed());
    let new = h.server();
    assert_ne!(new, before);
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0);
    assert_eq!(
        ino(&format!("/proc/{new}/exe")),
        ino(&exe.to_string_lossy()),
        "the new server runs the binary now on disk"
    );
    wait_for("the old server to exit", Duration::from_secs(30), || {
        (!Path::new(&format!("/proc/{before}")).exists()).then_some(())
    });
    settle();

    // SIGTERM to the server: it finishes what it read and exits; the holder restarts it.
    let (seq, old, _) = h.status().expect("status");
    kill(Pid::from_raw(old), Signal::SIGTERM).expect("SIGTERM the server");
    let restarted = h.wait_change(seq, "restarted");
    eprintln!("SIGTERM: new server after {restarted:?}");
    settle();

    let resend = kernel_has_resend();
    for (ctl, mib) in ctls.iter().zip(limits) {
        let (counts, errors) = reader_results(ctl);
        eprintln!("{mib} MiB container, readers' (ok, failed, wrong): {counts:?}");
        let allowed = if resend { 0 } else { 1 };
        for &(ok, failed, wrong) in &counts {
            assert!(ok > 0, "a reader read nothing: {counts:?}");
            assert_eq!(
                wrong, 0,
                "a wrong MemTotal in the {mib} MiB container: {errors}"
            );
            assert!(
                failed <= allowed,
                "{failed} failed reads (allowed {allowed}, RESEND {resend}) in the {mib} MiB container: {errors}\n{}",
                h.log_text()
            );
        }
    }
    drop(ctrs);
}

/// `cgsight daemon` as its systemd unit runs it: `--upgrade` (the unit's ExecReload) swaps the
/// server under a container's readers and a scraper, with no failed read or scrape and the
/// same /metrics address. The replaced server answers the connections it had accepted
/// (agent::a_connection_accepted_before_sigterm_is_answered shows the reset it used to send).
#[test]
fn the_daemon_upgrades_with_no_failed_read_or_scrape() {
    require_root!();
    let dir = TempDir::new("dhandover");
    let mp = dir.path().join("views");
    let _mount = MountGuard::new(&mp);
    let (mut daemon, port) = spawn_listening(
        Command::new(BIN)
            .args(["daemon", "--listen", "127.0.0.1:0", "--mountpoint"])
            .arg(&mp)
            .stdout(Stdio::null()),
        "listening on",
    );
    struct Term(i32);
    impl Drop for Term {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGTERM);
        }
    }
    let _term = Term(daemon.pid());
    let status = cgsight_fusefs::pidfile_path(&mp).with_extension("server");
    wait_for("the daemon to serve", Duration::from_secs(60), || {
        (cgsight_fusefs::is_serving(&mp)
            && cgsight_fusefs::read_status(&status).is_some()
            && try_get(port, "/metrics", &[]).is_ok_and(|r| r.status == 200))
        .then_some(())
    });
    let (ctr, ctl) = reader_container(&mp, dir.path(), 160);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (scrapes, failed) = std::thread::scope(|s| {
        let scraper = s.spawn(|| {
            let (mut n, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                match try_get(port, "/metrics", &[]) {
                    Ok(r)
                        if r.status == 200 && r.text().contains("container_memory_usage_bytes") => {
                    }
                    Ok(r) => failed.push(format!("status {}", r.status)),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (n, failed)
        });
        // Three upgrades: a connection caught between the two servers is a matter of timing.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_secs(1));
            let before = cgsight_fusefs::read_status(&status).map_or(0, |s| s.1);
            let out = Command::new(BIN)
                .args(["daemon", "--upgrade", "--mountpoint"])
                .arg(&mp)
                .output()
                .expect("cgsight daemon --upgrade");
            assert!(out.status.success(), "--upgrade: {}", stderr(&out));
            let after = cgsight_fusefs::read_status(&status).map_or(0, |s| s.1);
            assert_ne!(before, after, "a new server serves");
            wait_for("the old server to exit", Duration::from_secs(30), || {
                (!Path::new(&format!("/proc/{before}")).exists()).then_some(())
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        scraper.join().expect("scraper")
    });
    let (counts, errors) = reader_results(&ctl);
    eprintln!("daemon upgrade: {scrapes} scrapes, failed {failed:?}; readers' (ok, failed, wrong) {counts:?}");
    assert!(
        failed.is_empty(),
        "failed scrapes across the upgrade: {failed:?}"
    );
    for &(ok, failed, wrong) in &counts {
        assert!(ok > 0 && failed == 0 && wrong == 0, "{counts:?}: {errors}");
    }
    drop(ctr);
    let _ = kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM);
    let _ = daemon.wait_timeout(Duration::from_secs(30));
}
