//! `is_serving` and `spawn` against a server that is mounted but stopped (SIGSTOP): they must
//! return (false, an error) instead of hanging their caller. Needs root (FUSE mounts).
//!
//! The server is this test binary re-run as a child that only mounts and waits
//! (`serve_until_killed`), so the test can stop it without stopping itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cgsight_fusefs::{CpuView, FsConfig, IoUringMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const SERVE_AT: &str = "CGSIGHT_TEST_SERVE_AT";

/// The child's side: mounts at `$CGSIGHT_TEST_SERVE_AT`, says so, and serves until killed.
/// A no-op in a normal test run.
#[test]
fn serve_until_killed() {
    let Some(mp) = std::env::var_os(SERVE_AT) else {
        return;
    };
    let _fs = cgsight_fusefs::spawn(config(PathBuf::from(mp))).expect("mounting the views");
    println!("cgsight-test-serving");
    loop {
        std::thread::park();
    }
}

fn config(mountpoint: PathBuf) -> FsConfig {
    FsConfig {
        mountpoint,
        cpu_view: CpuView::Quota,
        threads: 2,
        io_uring: IoUringMode::Auto,
    }
}

fn mounted(mp: &Path) -> bool {
    cgsight_cgroup::mountinfo::read_self()
        .is_ok_and(|m| cgsight_cgroup::mountinfo::is_mount_point(&m, mp))
}

/// Kills the server (stopped or not), detaches its dead mount and removes the mount point.
struct Cleanup {
    child: Child,
    mp: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; its connection then dies with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.mp, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.mp);
    }
}

#[test]
fn a_stopped_server_is_not_serving_and_does_not_hang_the_caller() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: FUSE mounts need root");
        return;
    }
    let mp = std::env::temp_dir().join(format!("cgsight-test-stopped-{}", std::process::id()));
    std::fs::create_dir_all(&mp).expect("mount point");
    let mp = mp.canonicalize().expect("canonical mount point");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "serve_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SERVE_AT, &mp)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the server");
    let mut g = Cleanup { child, mp };
    let out = g.child.stdout.take().expect("piped stdout");
    let ready = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("cgsight-test-serving"));
    assert!(ready, "the server did not come up");
    assert!(cgsight_fusefs::is_serving(&g.mp), "a running server serves");

    let pid = Pid::from_raw(g.child.id() as i32);
    kill(pid, Signal::SIGSTOP).expect("stopping the server");
    // Wait until it is really stopped, not merely signalled.
    assert!(matches!(
        waitpid(pid, Some(WaitPidFlag::WUNTRACED)),
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP))
    ));
    assert!(
        !cgsight_fusefs::is_serving(&g.mp),
        "a stopped server does not serve"
    );
    // Nor is it mounted over (which would hide it) or waited for.
    match cgsight_fusefs::spawn(config(g.mp.clone())) {
        Err(cgsight_fusefs::Error::Io { what, .. }) => assert!(what.contains("does not answer")),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("mounted over a stopped server"),
    }
    let mp = g.mp.clone();
    drop(g);
    assert!(!mounted(&mp), "the mount is gone");
    assert!(!mp.exists(), "the mount point is gone");
}
