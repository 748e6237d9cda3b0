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

/// (mount arguments, file, value to write, value the container was given) for the container's
/// pids and cpu limits, chosen by where the host has each controller.
fn limit_files(id: &str) -> Vec<(String, std::path::PathBuf, &'static str, &'static str)> {
    use cgsight_cgroup::{Controller, Hierarchies, Version};
    let h = Hierarchies::detect().expect("cgroup layout");
    let mut out = Vec::new();
    for (c, v1, v2) in [
        (
            Controller::Pids,
            ("pids.max", "max", "50"),
            ("pids.max", "max", "50"),
        ),
        (
            Controller::Cpu,
            ("cpu.cfs_quota_us", "-1", "50000"),
            ("cpu.max", "max", "50000 100000"),
        ),
    ] {
        let m = h.mount_for(c).expect("controller mounted");
        let dir = m.mount_point.join("cgsight").join(id);
        let (mount, (file, value, given)) = match m.version {
            Version::V1 => {
                // The hierarchy's controllers, as its directory is named (cpu,cpuacct).
                let opts = m.mount_point.file_name().expect("hierarchy name");
                (format!("-t cgroup -o {}", opts.to_string_lossy()), v1)
            }
            Version::V2 => ("-t cgroup2".to_owned(), v2),
        };
        out.push((mount, dir.join(file), value, given));
    }
    out
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

#[test]
fn containers_cannot_lift_their_own_limits() {
    require_root!();
    for unconfined in [false, true] {
        let n = unique_name("limits");
        let _g = Ctr::named(&n);
        let mut flags = vec!["--pids-limit", "50", "--cpus", "0.5"];
        if unconfined {
            flags.extend(["--security-opt", "seccomp=unconfined"]);
        }
        let id = launch_detached_with(&n, &flags, &["sleep", "300"]);
        // inspect records what the container runs with.
        let sec = &inspect(&n).expect("inspect")["security"];
        let want = if unconfined { "unconfined" } else { "default" };
        assert_eq!(sec["seccomp"], want, "{sec}");
        assert_eq!(sec["device_rules"][0], "deny a *:* rwm", "{sec}");
        assert_eq!(sec["userns"], "host", "{sec}");
        for (mount, file, value, given) in limit_files(&id) {
            assert_eq!(read_trim(&file), given, "{}", file.display());
            let name = file.file_name().expect("file name").to_string_lossy();
            let script = format!(
                "export d=$(mktemp -d); unshare -UrmC sh -c 'echo unshare-ok; \
                 mount {mount} none $d && echo mount-ok && echo {value} > $d/{name} && echo write-ok'"
            );
            // Through exec: it must get the container's filter too.
            let o = cgsight(&["exec", &n, "sh", "-c", &script]);
            let (out, err) = (stdout(&o), stderr(&o));
            let now = read_trim(&file);
            if !unconfined {
                // The filter refuses unshare(CLONE_NEWUSER): nothing after it runs.
                assert!(!out.contains("unshare-ok"), "{out}");
                assert!(err.contains("Operation not permitted"), "{err}");
                assert_eq!(now, given, "{} changed", file.display());
                continue;
            }
            // Unconfined, the step the filter stopped works, and so does the mount.
            assert!(out.contains("unshare-ok"), "{name}: {out} {err}");
            assert!(out.contains("mount-ok"), "{name}: {out} {err}");
            // The write: `unshare -r` maps the new namespace's root to host root, so a v1 file
            // is writable. On cgroup2 mounted with nsdelegate the kernel refuses writes to a
            // namespace root's own limits, so there it may still fail: assert what happened.
            let wrote = out.contains("write-ok");
            assert_eq!(wrote, now != given, "{name}: {out} {err}: host has {now}");
            if mount.contains("-t cgroup ") {
                assert!(wrote, "{name}: v1 write failed: {out} {err}");
            }
        }
    }
}

/// A python3 snippet calling keyctl(2) directly (no keyutils needed): searches root's user
/// keyring for `desc` and prints the key's payload.
fn keyctl_read_script(desc: &str) -> String {
    let nr = if cfg!(target_arch = "aarch64") {
        219
    } else {
        250
    };
    format!(
        "import ctypes, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         L = ctypes.c_long\n\
         kid = libc.syscall(L({nr}), L(10), L(-4), b'user', b'{desc}', L(0))\n\
         if kid < 0:\n    print('search-errno', ctypes.get_errno()); sys.exit(1)\n\
         buf = ctypes.create_string_buffer(256)\n\
         n = libc.syscall(L({nr}), L(11), L(kid), buf, L(256))\n\
         if n < 0:\n    print('read-errno', ctypes.get_errno()); sys.exit(2)\n\
         print('payload', buf.raw[:n].decode())\n"
    )
}

/// A key in host root's user keyring, readable by root; unlinked on drop.
struct HostKey {
    id: i64,
}

impl HostKey {
    fn add(desc: &str, payload: &str) -> HostKey {
        let (add, ctl) = if cfg!(target_arch = "aarch64") {
            (217, 219)
        } else {
            (248, 250)
        };
        let py = format!(
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nL = ctypes.c_long\n\
             k = libc.syscall(L({add}), b'user', b'{desc}', b'{payload}', L({len}), L(-4))\n\
             assert k > 0, ctypes.get_errno()\n\
             assert libc.syscall(L({ctl}), L(5), L(k), L(0x3f3f0000)) == 0\nprint(k)\n",
            len = payload.len()
        );
        let o = Command::new("python3")
            .args(["-c", &py])
            .output()
            .expect("python3");
        assert!(o.status.success(), "add_key: {}", stderr(&o));
        HostKey {
            id: stdout(&o).trim().parse().expect("key id"),
        }
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        let ctl = if cfg!(target_arch = "aarch64") {
            219
        } else {
            250
        };
        // KEYCTL_INVALIDATE: gone from every keyring.
        let py = format!(
            "import ctypes\nL = ctypes.c_long\nctypes.CDLL(None).syscall(L({ctl}), L(21), L({}))\n",
            self.id
        );
        let _ = Command::new("python3").args(["-c", &py]).status();
    }
}

#[test]
fn host_root_keyring_is_out_of_reach() {
    require_root!();
    let desc = unique_name("key");
    let _key = HostKey::add(&desc, "host-secret");
    let py = keyctl_read_script(&desc);
    // Here, the key is readable: the probe works.
    let here = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python3");
    assert!(
        stdout(&here).contains("payload host-secret"),
        "{}",
        stderr(&here)
    );
    // In a default container (same uid 0, same user keyring) the syscall itself is refused.
    let o = run(&launch_sh(
        &unique_name("key"),
        &[],
        &format!("python3 -c \"{py}\""),
    ));
    assert!(
        stdout(&o).contains("search-errno 1"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    // Unconfined, the same container reads the host's key: seccomp is what stops it.
    let o = run(&launch_sh(
        &unique_name("key"),
        &["--security-opt", "seccomp=unconfined"],
        &format!("python3 -c \"{py}\""),
    ));
    assert!(
        stdout(&o).contains("payload host-secret"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn a_docker_format_profile_file_behaves_as_the_builtin() {
    require_root!();
    let file = format!("{REPO}/tests/fixtures/seccomp-docker-default.json");
    let desc = unique_name("key-file");
    let _key = HostKey::add(&desc, "host-secret");
    let probes = format!(
        "grep '^Seccomp:' /proc/self/status; unshare -Ur true; echo unshare=$?; \
         python3 -c \"{}\"; echo ok",
        keyctl_read_script(&desc)
    );
    let outs: Vec<String> = [
        vec![],
        vec!["--security-opt".to_string(), format!("seccomp={file}")],
    ]
    .iter()
    .map(|flags| {
        let f: Vec<&str> = flags.iter().map(String::as_str).collect();
        let o = run(&launch_sh(&unique_name("prof"), &f, &probes));
        assert_eq!(o.status.code(), Some(0), "{flags:?}: {}", stderr(&o));
        stdout(&o)
    })
    .collect();
    assert!(outs[0].contains("Seccomp:\t2"), "{}", outs[0]);
    assert!(
        outs[0].contains("unshare=1") && outs[0].contains("search-errno 1"),
        "{}",
        outs[0]
    );
    assert_eq!(outs[0], outs[1], "the file and the built-in profile differ");
}

#[test]
fn bad_security_input_is_refused_and_leaves_nothing() {
    require_root!();
    let d = TempDir::new("bad-profile");
    let garbage = d.path.join("garbage.json");
    std::fs::write(&garbage, "{ not a profile").unwrap();
    let bad_action = d.path.join("bad-action.json");
    std::fs::write(&bad_action, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
    // Twice in a row, so a compiled-filter cache could not hide the second refusal.
    let unknown = d.path.join("unknown-syscall.json");
    std::fs::write(
        &unknown,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "cgsight_no_such_call"], "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let unknown_flags = || {
        (
            vec![
                "--security-opt".to_owned(),
                format!("seccomp={}", unknown.display()),
            ],
            "cgsight_no_such_call",
        )
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--security-opt".into(),
                format!("seccomp={}", garbage.display()),
            ],
            "garbage.json",
        ),
        (
            vec![
                "--security-opt".into(),
                format!("seccomp={}", bad_action.display()),
            ],
            "bad-action.json",
        ),
        (
            vec![
                "--security-opt".into(),
                "seccomp=/nonexistent/profile.json".into(),
            ],
            "/nonexistent/profile.json",
        ),
        (
            vec!["--security-opt".into(), "apparmor=foo".into()],
            "apparmor=foo",
        ),
        (
            vec!["--device".into(), "/dev/cgsight-no-such-device".into()],
            "/dev/cgsight-no-such-device",
        ),
        (
            vec!["--device".into(), "/etc/hostname".into()],
            "/etc/hostname",
        ),
        (vec!["--userns".into(), "sometimes".into()], "sometimes"),
        (
            vec!["--privileged".into(), "--userns".into(), "auto".into()],
            "--privileged",
        ),
        unknown_flags(),
        unknown_flags(),
    ];
    for (flags, named) in cases {
        let n = unique_name("bad-sec");
        let f: Vec<&str> = flags.iter().map(String::as_str).collect();
        let o = run(&launch_sh(&n, &f, "true"));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: one line: {err}");
        assert!(
            err.contains(named),
            "{flags:?}: does not name {named}: {err}"
        );
        no_container_named(&n);
    }
}

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
