//! Containment: what a container must not reach on the host (issue 12). Each attack is also
//! run with the protection switched off where the launcher allows it, so the test can fail.

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
    Command::new("sh")
        .args(["-c", &line])
        .env("CGSIGHT_FS_MOUNTPOINT", views_mountpoint())
        .output()
        .expect("running sh")
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

#[test]
fn launch_closes_inherited_descriptors() {
    require_root!();
    assert!(!escapes(
        "fd-launch",
        &launch_sh(&unique_name("fd"), &[], ESCAPE)
    ));
    // --preserve-fds 6 passes 3..=8: the same attack now succeeds.
    let keep = launch_sh(&unique_name("fd"), &["--preserve-fds", "6"], ESCAPE);
    assert!(escapes("fd-launch", &keep));
    // Numbers the caller has not open are not filled with the launcher's own pipes (the
    // error pipe leaking into the command would hang this launch).
    // Below 3+40 the command sees exactly the descriptors the same command run here sees.
    let script = "ls /proc/self/fd";
    let below_43 = |o: &Output| -> Vec<u32> {
        let mut v: Vec<u32> = stdout(o)
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .filter(|&f| f < 43)
            .collect();
        v.sort_unstable();
        v
    };
    let here = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    let o = run(&launch_sh(
        &unique_name("fd"),
        &["--preserve-fds", "40"],
        script,
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(below_43(&o), below_43(&here), "{}", stderr(&o));
}

#[test]
fn init_and_exec_close_inherited_descriptors() {
    require_root!();
    // --init: neither the command nor pid 1 (which never execs) keeps fd 8.
    let via_init = "ls /proc/1/fd/8 || echo escaped > /proc/self/fd/8/escaped";
    assert!(!escapes(
        "fd-init",
        &launch_sh(&unique_name("fd-init"), &["--init"], via_init)
    ));

    let n = unique_name("fd-exec");
    let _g = Ctr::named(&n);
    launch_detached(&n, &["sleep", "300"]);
    let exec = |flags: &[&str]| -> Vec<String> {
        let mut v = vec!["exec".to_string()];
        v.extend(flags.iter().map(|f| f.to_string()));
        v.extend([n.clone(), "sh".into(), "-c".into(), ESCAPE.into()]);
        v
    };
    assert!(!escapes("fd-exec", &exec(&[])));
    assert!(escapes("fd-exec", &exec(&["--preserve-fds", "6"])));
}

#[test]
fn volume_targets_resolve_inside_the_root() {
    require_root!();
    let d = TempDir::new("vol-link");
    let src = d.path.join("src");
    std::fs::write(&src, "from-the-volume\n").unwrap();
    // A dangling absolute link: inside the container it names <root>/<d>/real, on the host
    // <d>/real. Creating the bind target must happen in the container's root.
    let link = d.path.join("link");
    let real = d.path.join("real");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let vol = format!("{}:{}:ro", src.display(), link.display());
    let cat = format!("cat {}", link.display());
    let o = run(&launch_sh(&unique_name("vol"), &["-v", &vol], &cat));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "from-the-volume\n");
    assert!(
        !real.exists(),
        "the launcher created a file on the host through the link"
    );

    // /etc/localtime is a symlink in most roots: the volume shows at the link's target in
    // the root, so reading /etc/localtime gives the volume.
    if std::fs::symlink_metadata("/etc/localtime").is_ok_and(|m| m.file_type().is_symlink()) {
        let vol = format!("{}:/etc/localtime:ro", src.display());
        let cat = "cat /etc/localtime";
        let o = run(&launch_sh(&unique_name("vol-tz"), &["-v", &vol], cat));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), "from-the-volume\n");
    }
}

#[test]
fn volumes_on_proc_or_sys_and_bad_cpu_lists_are_refused() {
    require_root!();
    let d = TempDir::new("vol-proc");
    // Lexically, and through a link that resolves there inside the root.
    let plink = d.path.join("plink");
    std::os::unix::fs::symlink("/proc/sys/kernel", &plink).unwrap();
    let via_link = format!("/tmp:{}", plink.display());
    for args in [
        vec!["-v", "/tmp:/proc/sys/kernel"],
        vec!["-v", "/tmp:/sys/kernel"],
        vec!["-v", via_link.as_str()],
        vec!["--cpuset-cpus", "0,,1"],
    ] {
        let n = unique_name("refuse");
        let o = run(&launch_sh(&n, &args, "true"));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        no_container_named(&n);
    }
}

#[test]
fn firmware_and_powercap_are_masked() {
    require_root!();
    // Only paths the host has can be checked (powercap is absent on many VMs).
    let masked: Vec<&str> = ["/sys/firmware", "/sys/devices/virtual/powercap"]
        .into_iter()
        .filter(|p| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()))
        .collect();
    if masked.is_empty() {
        eprintln!("skipped: the host has neither /sys/firmware nor powercap entries");
        return;
    }
    let script: String = masked
        .iter()
        .map(|p| format!("echo {p}=$(ls -A {p} | wc -l);"))
        .collect();
    let n = unique_name("mask");
    let o = launch_rm(&n, &["sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for p in masked {
        assert!(
            stdout(&o).contains(&format!("{p}=0")),
            "{p} is visible: {}",
            stdout(&o)
        );
    }
}

#[test]
fn host_root_containers_cannot_read_each_others_layers() {
    require_root!();
    let a = unique_name("layers-a");
    let _ga = Ctr::named(&a);
    launch_detached(
        &a,
        &["sh", "-c", "echo secret-of-a > /secret; exec sleep 300"],
    );
    let upper = inspect(&a).expect("inspect a")["paths"]["upper"]
        .as_str()
        .expect("upper path")
        .to_owned();
    let secret = format!("{upper}/secret");
    cgsight_testkit::wait_for(
        "a's secret in its upper layer",
        Duration::from_secs(30),
        || std::path::Path::new(&secret).exists().then_some(()),
    );
    let state_dir = std::path::Path::new(&upper)
        .ancestors()
        .nth(2)
        .expect("the layers' root")
        .to_string_lossy()
        .into_owned();
    let b = unique_name("layers-b");
    let script = format!(
        "cat {secret}; test -e {state_dir} && echo store-visible; ls -A /var/lib/cgsight | wc -l"
    );
    let o = launch_rm(&b, &["sh", "-c", &script]);
    let out = stdout(&o);
    assert!(
        !out.contains("secret-of-a"),
        "b read a's upper layer: {out}"
    );
    assert_eq!(
        out.trim(),
        "0",
        "b lists the layer store: {out} {}",
        stderr(&o)
    );
}
