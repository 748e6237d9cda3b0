//! Helpers shared by the launch_* test binaries (included with `mod`).
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_cgsight");

/// Runs cgsight with the views served by this test binary's own `cgsight fs`.
pub fn cgsight(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("CGSIGHT_FS_MOUNTPOINT", views_mountpoint())
        .output()
        .expect("running cgsight")
}

/// One `cgsight fs --foreground` per test binary, on a private mountpoint. It is spawned from a
/// thread that never exits and carries PR_SET_PDEATHSIG, so when the test process ends (pass or
/// fail) the server gets SIGTERM and unmounts: no host daemon is left behind.
pub fn views_mountpoint() -> &'static str {
    static VIEWS: OnceLock<String> = OnceLock::new();
    VIEWS.get_or_init(|| {
        let mp = format!("/tmp/{}", cgsight_testkit::unique_name("views"));
        std::fs::create_dir_all(&mp).expect("views mountpoint");
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
        cgsight_testkit::wait_for("cgsight fs to serve", Duration::from_secs(60), || {
            let mounted = std::fs::read_to_string("/proc/self/mountinfo")
                .ok()?
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(mp.as_str()));
            (mounted && std::fs::read_to_string(&probe).is_ok()).then_some(())
        });
        mp
    })
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

/// Removes the container by name on drop (success or failure of the test).
pub struct Ctr(pub String);
impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = cgsight(&["rm", "-f", &self.0]);
    }
}

pub fn inspect(name: &str) -> Option<serde_json::Value> {
    let o = cgsight(&["inspect", name]);
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v.get(0).cloned()
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
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup fs")
        .flatten()
    {
        let p = h.path().join("cgsight").join(id);
        assert!(!p.exists(), "cgroup left: {}", p.display());
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mi.contains(id), "mount left for {id}");
}

/// The ids of state dirs whose name matches (for --rm containers that are already gone, the
/// caller records the id from inspect while running, or checks by name).
pub fn no_container_named(name: &str) {
    let o = cgsight(&["inspect", name]);
    assert!(!o.status.success(), "container {name} still registered");
}
