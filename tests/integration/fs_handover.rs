//! The views outlive their server: a killed, restarted or upgraded `cgsight fs` server never
//! breaks a running container's /proc views. The holder keeps the mount's /dev/fuse
//! descriptor and hands it to each new server; where the kernel has FUSE_NOTIFY_RESEND
//! (6.9+) not one read fails, elsewhere (the 6.1 VM lanes) a reader caught by a kill -9
//! fails once at most.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cgsight_testkit::{require_root, wait_for, ChildGuard, MountGuard, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{stderr, Ctr, BIN};

/// Readers per container.
const READERS: usize = 8;

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
    let mut ctrs = Vec::new();
    let mut ctls = Vec::new();
    for mib in limits {
        let ctl = dir.path().join(format!("ctl-{mib}"));
        std::fs::create_dir(&ctl).expect("ctl dir");
        let vol = format!("{}:/ctl", ctl.display());
        let kb = (mib * 1024).to_string();
        ctrs.push(Ctr::launch(
            &h.mp,
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
        ));
        ctls.push(ctl);
    }
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

    for ctl in &ctls {
        std::fs::write(ctl.join("stop"), "").expect("stop file");
    }
    let resend = kernel_has_resend();
    for (ctl, mib) in ctls.iter().zip(limits) {
        let results: Vec<String> =
            wait_for("the readers' results", Duration::from_secs(120), || {
                let r: Vec<String> = (1..=READERS)
                    .filter_map(|i| std::fs::read_to_string(ctl.join(format!("r.{i}"))).ok())
                    .collect();
                (r.len() == READERS).then_some(r)
            });
        let errors: String = (1..=READERS)
            .filter_map(|i| std::fs::read_to_string(ctl.join(format!("err.{i}"))).ok())
            .collect();
        eprintln!("{mib} MiB container, reader ok failed wrong: {results:?}");
        for r in &results {
            let n: Vec<u64> = r
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            let (ok, failed, wrong) = (n[1], n[2], n[3]);
            assert!(ok > 0, "reader read nothing: {r}");
            assert_eq!(
                wrong, 0,
                "a wrong MemTotal in the {mib} MiB container: {errors}"
            );
            let allowed = if resend { 0 } else { 1 };
            assert!(
                failed <= allowed,
                "{failed} failed reads (allowed {allowed}, RESEND {resend}) in the {mib} MiB container: {errors}\n{}",
                h.log_text()
            );
        }
    }
    drop(ctrs);
}
