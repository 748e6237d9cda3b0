//! Devices: host disks and device controls are out of reach; --privileged opts out of it all.

use super::*;

/// A loop device backed by a temp file that starts with [`DISK_MARKER`]: a stand-in for a host
/// disk. Detached on drop.
struct Loop {
    dev: String,
    backing: TempDir,
}

const DISK_MARKER: &str = "CGSIGHT-HOST-DISK";

impl Loop {
    fn new() -> Option<Loop> {
        // A VM lane's kernel has loop as a module that nothing has loaded yet.
        let _ = Command::new("modprobe").arg("loop").status();
        let backing = TempDir::new("loop");
        let f = backing.path.join("disk");
        let mut data = DISK_MARKER.as_bytes().to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&f, data).expect("backing file");
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&f)
            .output()
            .ok()?;
        if !o.status.success() {
            eprintln!("losetup -f failed: {}", stderr(&o));
            return None;
        }
        Some(Loop {
            dev: stdout(&o).trim().to_owned(),
            backing,
        })
    }

    fn rdev(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let r = std::fs::metadata(&self.dev).expect("loop node").rdev();
        (libc::major(r).into(), libc::minor(r).into())
    }

    /// The backing file's bytes at `off` (after detaching, so every write is flushed).
    fn detach_and_read(mut self, off: usize, len: usize) -> String {
        let f = self.backing.path.join("disk");
        let o = Command::new("losetup").args(["-d", &self.dev]).output();
        assert!(
            o.is_ok_and(|o| o.status.success()),
            "losetup -d {}",
            self.dev
        );
        // Not again on drop: the number may be someone else's by then.
        self.dev.clear();
        let data = std::fs::read(f).expect("backing file");
        String::from_utf8_lossy(data.get(off..off + len).unwrap_or_default()).into_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if self.dev.is_empty() {
            return;
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// The host's node numbers of `path`, or `fallback` where the host has none.
fn char_dev(path: &str, fallback: (u64, u64)) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (libc::major(m.rdev()).into(), libc::minor(m.rdev()).into()))
        .unwrap_or(fallback)
}

#[test]
fn host_disks_and_device_controls_are_out_of_reach() {
    require_root!();
    let Some(disk) = Loop::new() else {
        eprintln!("skipped: no loop device (losetup -f failed)");
        return;
    };
    let (maj, min) = disk.rdev();
    let (lc_maj, lc_min) = char_dev("/dev/loop-control", (10, 237));
    let (fu_maj, fu_min) = char_dev("/dev/fuse", (10, 229));
    // mknod itself is allowed (runc's defaults allow `m` on every node: it is harmless without
    // read/write); opening the node is what the kernel's device rules refuse.
    let attack = format!(
        "mknod /dev/hd b {maj} {min}; head -c 17 /dev/hd; echo read=$?; \
         printf PWNED | dd of=/dev/hd conv=notrunc 2>/dev/null; echo write=$?; \
         mknod /dev/lc c {lc_maj} {lc_min}; (: < /dev/lc); echo loopctl=$?; \
         mknod /dev/fz c {fu_maj} {fu_min}; (: < /dev/fz); echo fuse=$?"
    );
    // Default, and with seccomp off too: the device rules alone stop it (on cgroup v2 the
    // BPF device program, on v1 the devices controller).
    for flags in [&[][..], &["--security-opt", "seccomp=unconfined"][..]] {
        let o = run(&launch_sh(&unique_name("dev"), flags, &attack));
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(
            !out.contains(DISK_MARKER),
            "{flags:?}: read the disk: {out}"
        );
        for step in ["read=1", "write=1", "loopctl=", "fuse="] {
            assert!(out.contains(step), "{flags:?}: no {step}: {out} {err}");
        }
        assert!(
            !out.contains("loopctl=0") && !out.contains("fuse=0"),
            "{flags:?}: opened a control device: {out}"
        );
        assert!(
            err.matches("Operation not permitted").count() >= 3,
            "{flags:?}: expected EPERM on each open: {err}"
        );
    }
    // --device hands the node over: read and write work.
    let grant = format!(
        "head -c 17 {d}; echo; echo WRITTEN1 | dd of={d} bs=512 seek=1 conv=notrunc,fsync 2>/dev/null; echo write=$?",
        d = disk.dev
    );
    let o = run(&launch_sh(
        &unique_name("dev-ok"),
        &["--device", &disk.dev],
        &grant,
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(DISK_MARKER), "{}", stdout(&o));
    assert!(stdout(&o).contains("write=0"), "{}", stdout(&o));
    // Under --userns auto the node is container root's (host root's node, shifted into the
    // range), so container root can use what it was given.
    let o = run(&launch_sh(
        &unique_name("dev-uns"),
        &["--userns", "auto", "--device", &disk.dev],
        &format!("stat -c %u:%g {d}; head -c 17 {d}; echo", d = disk.dev),
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("0:"), "{}", stdout(&o));
    assert!(stdout(&o).contains(DISK_MARKER), "{}", stdout(&o));
    assert_eq!(disk.detach_and_read(512, 8), "WRITTEN1");
}

/// The capability bounding set of this (root) process, as /proc/self/status prints it.
fn own_cap_bnd() -> String {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim()
        .to_owned()
}

#[test]
fn privileged_opts_out_of_every_protection() {
    require_root!();
    let Some(disk) = Loop::new() else {
        eprintln!("skipped: no loop device (losetup -f failed)");
        return;
    };
    // The host's disk by its own name (no mknod: the node is there), the filter and the
    // capability set, and the masks and read-only mounts.
    let script = format!(
        "head -c 17 {d}; echo; grep -E '^(Seccomp|CapEff):' /proc/self/status; \
         grep -E ' /proc/(sys|keys|kcore) | /sys ' /proc/self/mounts; echo done",
        d = disk.dev
    );
    let n = unique_name("priv");
    let _g = Ctr::named(&n);
    let id = launch_detached_with(&n, &["--privileged"], &["sleep", "300"]);
    assert!(!id.is_empty());
    let sec = &inspect(&n).expect("inspect")["security"];
    assert_eq!(sec["privileged"], true, "{sec}");
    assert_eq!(sec["seccomp"], "unconfined", "{sec}");
    assert_eq!(
        sec["device_rules"],
        serde_json::json!(["allow a *:* rwm"]),
        "{sec}"
    );
    let o = cgsight(&["exec", &n, "sh", "-c", &script]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out} {}", stderr(&o));
    assert!(
        out.contains(DISK_MARKER),
        "privileged cannot read the disk: {out}"
    );
    assert!(out.contains("Seccomp:\t0"), "{out}");
    assert!(
        out.contains(&format!("CapEff:\t{}", own_cap_bnd())),
        "not every capability: {out}"
    );
    // The sysfs mount is there to check (so the loop below cannot pass on no lines).
    assert!(out.contains(" /sys "), "{out}");
    for l in out
        .lines()
        .filter(|l| l.contains(" /sys ") || l.contains(" /proc/"))
    {
        assert!(
            !l.contains(" ro,") && !l.contains("/proc/keys") && !l.contains("/proc/kcore"),
            "still masked or read-only: {l}"
        );
    }
    // The same script in a default container: the node is absent, the rest confined.
    let o = run(&launch_sh(&unique_name("unpriv"), &[], &script));
    let out = stdout(&o);
    assert!(!out.contains(DISK_MARKER), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(
        out.contains(" /proc/sys ") && out.contains(" /sys "),
        "{out}"
    );
}
