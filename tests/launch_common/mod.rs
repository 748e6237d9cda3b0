//! Helpers shared by the launch_* test binaries (included with `mod`).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_cgsight");

pub fn cgsight(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running cgsight")
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
