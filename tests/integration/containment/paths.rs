//! Paths: -v targets resolve inside the root, /proc and /sys targets are refused, firmware and
//! powercap are masked, and host-root containers cannot read each other's layers.

use super::*;

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
    // Lexically, and through a link that resolves there inside the root. The link lives in a
    // --rootfs of its own: in host-root mode a temp dir on a separate mount (a VM's tmpfs /tmp)
    // is not part of the container's root at all.
    std::os::unix::fs::symlink("/proc/sys/kernel", d.path.join("plink")).unwrap();
    let rootfs = d.path.display().to_string();
    for args in [
        vec!["-v", "/tmp:/proc/sys/kernel"],
        vec!["-v", "/tmp:/sys/kernel"],
        vec!["--rootfs", rootfs.as_str(), "-v", "/tmp:/plink"],
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
