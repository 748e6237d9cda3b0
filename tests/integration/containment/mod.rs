//! Containment: what a container must not reach on the host (issue 12). Each attack is also
//! run with the protection switched off where the launcher allows it, so the test can fail.
//! Shared here: launching a shell script, and running with a leaked descriptor 8.

mod devices;
mod fds;
mod limits;
mod paths;
mod seccomp;
mod userns;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;
use cgsight_testkit::{require_root, unique_name, TempDir};

/// Runs `cgsight ARGS` from a shell that first opens `dir` as descriptor 8 without
/// close-on-exec (as `exec 8</dir` in a user's shell would).
fn with_fd8(dir: &Path, args: &[&str]) -> Output {
    let mut line = format!("exec 8<'{}'; exec '{BIN}'", dir.display());
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut sh = Command::new("sh");
    sh.args(["-c", &line])
        .env("CGSIGHT_FS_MOUNTPOINT", views_mountpoint());
    // The shell execs the launch: in the binary's test network namespace, as every launch.
    in_test_netns(&mut sh);
    sh.output().expect("running sh")
}

/// `launch --rm --no-proc-views FLAGS --name NAME -- sh -c SCRIPT`.
fn launch_sh(name: &str, flags: &[&str], script: &str) -> Vec<String> {
    let mut v: Vec<String> = ["launch", "--rm", "--no-proc-views"]
        .map(String::from)
        .into();
    v.extend(flags.iter().map(|f| f.to_string()));
    v.extend(["--name".into(), name.to_owned(), "--".into()]);
    v.extend(["sh", "-c", script].map(String::from));
    v
}

/// Writes through the leaked descriptor: it names a host directory, whatever the container's
/// mount namespace.
const ESCAPE: &str = "echo escaped > /proc/self/fd/8/escaped";

/// Runs `args` with fd 8 open on a fresh host directory; true if the container wrote into it
/// (and then the command must have succeeded).
fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cgsight(&args)
}

fn escapes(tag: &str, args: &[String]) -> bool {
    let host = TempDir::new(tag);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = with_fd8(&host.path, &args);
    let escaped = host.path.join("escaped").exists();
    assert_eq!(escaped, o.status.success(), "{args:?}: {}", stderr(&o));
    escaped
}
