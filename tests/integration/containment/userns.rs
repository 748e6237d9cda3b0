//! --userns auto: container root as an unprivileged host id range.

use super::*;

/// Where `--userns auto` records a container's range (as the launcher computes it).
fn userns_record(id: &str) -> std::path::PathBuf {
    let dir = std::env::var("CGSIGHT_USERNS_DIR")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/var/lib/cgsight/userns".into());
    Path::new(&dir).join(format!("{id}.range"))
}

fn secret_file(d: &TempDir) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = d.path.join("shadow");
    std::fs::write(&f, "host-only-secret\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f.display().to_string()
}

#[test]
fn userns_auto_keeps_host_root_files_unreadable() {
    require_root!();
    // A stand-in for /etc/shadow: host root's, 0600. Bound at its own path: in a VM lane the
    // test's /tmp is a separate mount that the host-root overlay (of / alone) does not show.
    let d = TempDir::new("userns");
    let secret = secret_file(&d);
    let bind = format!("{0}:{0}:ro", d.path.display());
    let probe = format!("/{}", unique_name("userns-probe"));
    let script = format!(
        "id -u; cat {secret}; echo cat=$?; echo written > {probe} && cat {probe}; \
         cat /proc/self/uid_map"
    );
    let shared = run(&launch_sh(
        &unique_name("uns-host"),
        &["-v", &bind],
        &script,
    ));
    assert!(
        stdout(&shared).contains("host-only-secret"),
        "{}",
        stderr(&shared)
    );
    let o = run(&launch_sh(
        &unique_name("uns"),
        &["--userns", "auto", "-v", &bind],
        &script,
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(!out.contains("host-only-secret"), "{out}");
    assert!(
        out.contains("cat=1") && err.contains("Permission denied"),
        "{out} {err}"
    );
    // Container root still works: it is uid 0 inside, and writes to its root land in its layer.
    assert!(out.starts_with("0\n"), "{out}");
    assert!(out.contains("written"), "{out} {err}");
    assert!(
        !Path::new(&probe).exists(),
        "the write reached the host's /"
    );
    let map: Vec<u64> = out
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        map.len() == 3 && map[0] == 0 && map[1] > 0 && map[2] == 65536,
        "uid_map: {out}"
    );
}

#[test]
fn userns_auto_exec_inspect_and_rm_free_the_range() {
    require_root!();
    let d = TempDir::new("userns-exec");
    let secret = secret_file(&d);
    let n = unique_name("uns-d");
    let g = Ctr::named(&n);
    let id = launch_detached_with(&n, &["--userns", "auto"], &["sleep", "300"]);
    let v = inspect(&n).expect("inspect");
    let range = &v["security"]["userns_range"];
    assert_eq!(range["count"], 65536, "{v}");
    assert_eq!(v["security"]["userns"], "auto", "{v}");
    assert!(userns_record(&id).exists());
    // exec joins the user namespace too.
    let o = cgsight(&["exec", &n, "sh", "-c", &format!("id -u; cat {secret}")]);
    assert!(
        stdout(&o).starts_with("0\n"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stdout(&o).contains("host-only-secret"), "{}", stdout(&o));
    // A supervisor that crashed never freed it: rm does.
    let sup = v["supervisor_pid"].as_i64().expect("supervisor pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the supervisor");
    cgsight_testkit::wait_for("the supervisor to die", Duration::from_secs(30), || {
        (!Path::new(&format!("/proc/{sup}")).exists()).then_some(())
    });
    g.remove();
    assert!(
        !userns_record(&id).exists(),
        "rm left the id range recorded"
    );
    assert_gone(&id);
}

#[test]
fn userns_auto_with_a_rootfs_gives_root_its_image() {
    require_root!();
    let Ok(busybox) = which("busybox") else {
        eprintln!("skipped: no busybox to build a root from");
        return;
    };
    // On a disk filesystem: idmapped mounts of tmpfs need Linux 6.3.
    let r = TempDir::new_in(Path::new("/var/tmp"), "uns-rootfs");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(r.path.join(d)).unwrap();
    }
    std::fs::copy(&busybox, r.path.join("bin/busybox")).unwrap();
    for c in ["sh", "id", "cat"] {
        std::os::unix::fs::symlink("busybox", r.path.join("bin").join(c)).unwrap();
    }
    let sec = r.path.join("etc/secret");
    std::fs::write(&sec, "image-file\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rootfs = r.path.display().to_string();
    let o = run(&launch_sh(
        &unique_name("uns-rootfs"),
        &["--rootfs", &rootfs, "--userns", "auto"],
        "id -u; cat /etc/secret; echo new > /etc/new && cat /etc/new",
    ));
    if o.status.code() == Some(125) && stderr(&o).contains("cannot idmap") {
        // e.g. /var/tmp on tmpfs before Linux 6.3, or on 9p: no idmapped mounts there.
        eprintln!("skipped: {}", stderr(&o).trim());
        return;
    }
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The image's root-owned 0600 file is container root's (idmapped), and writable.
    assert_eq!(stdout(&o), "0\nimage-file\nnew\n", "{}", stderr(&o));
    assert!(
        !r.path.join("etc/new").exists(),
        "the write reached the image"
    );
}

fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
        .ok_or(())
}
