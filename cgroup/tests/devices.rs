//! Live tests of the device allow-list (root required): a forked child moves itself into a
//! cgroup and tries device accesses. Each cgroup is probed once without rules (everything must
//! work, so the test can fail) and once with them.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cgsight_cgroup::devices::program::Insn;
use cgsight_cgroup::devices::{self, bpf, v1, Enforcer, Table};
use cgsight_cgroup::{Controller, Hierarchies, Managed, Resources, Version};
use cgsight_testkit::{require_root, unique_name, TestCgroup};

/// A cgroup killed and removed on drop.
struct Cg(Managed);

impl Drop for Cg {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill_and_remove() {
            eprintln!("cleaning up {:?}: {e}", self.0.dirs());
        }
    }
}

/// A scratch directory on a filesystem that honours device nodes, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    /// Under /dev: devtmpfs honours device nodes on every host, while the target dir or /tmp
    /// may be `nodev` or a VM's 9p share (where mknod answers ENXIO without saying nodev).
    fn new() -> Self {
        let base = PathBuf::from("/dev");
        let p = base.join(unique_name("devices"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How one access went: the device cgroup check comes before the driver's open, so ENODEV and
/// ENXIO (no driver behind the node, e.g. a module not loaded in a VM) mean it let the access by.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Res {
    Allowed,
    Denied,
    Other(i32),
}

impl Res {
    fn of(errno: i32) -> Res {
        match errno {
            0 | libc::ENODEV | libc::ENXIO => Res::Allowed,
            libc::EPERM => Res::Denied,
            e => Res::Other(e),
        }
    }
}

/// What the child tries, in order.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Outcome {
    join: Res,
    open_null: Res,
    mknod_block: Res,
    open_block: Res,
    open_loop_control: Res,
    open_fuse: Res,
}

/// The `MAJ:MIN` of a block device of this host: loop0 when there is one, else the first in
/// /sys/block, else loop's 7:0 (the rules judge numbers, not drivers: with no driver behind it
/// an allowed open answers ENXIO, which counts as let through).
fn some_block_device() -> libc::dev_t {
    if let Ok(m) = std::fs::metadata("/dev/loop0") {
        return m.rdev();
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir("/sys/block")
        .map(|d| d.flatten().map(|e| e.path().join("dev")).collect())
        .unwrap_or_default();
    names.sort();
    names
        .first()
        .and_then(|n| std::fs::read_to_string(n).ok())
        .and_then(|t| {
            let (a, b) = t.trim().split_once(':')?;
            Some(libc::makedev(a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or_else(|| libc::makedev(7, 0))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `/dev/NAME`, or when this host lacks it (a module not loaded), a node with its numbers made
/// in `scratch` by the test process (which no rule confines).
fn char_node(name: &str, major: u32, minor: u32, scratch: &Path) -> CString {
    let dev = Path::new("/dev").join(name);
    if dev.exists() {
        return cstr(&dev);
    }
    let p = cstr(&scratch.join(unique_name(name)));
    // SAFETY: valid C string.
    let rc = unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(rc, 0, "mknod {name}: {}", std::io::Error::last_os_error());
    p
}

/// Forks a child that joins every `procs` file then tries the accesses; returns its outcome.
fn probe(procs: &[PathBuf], scratch: &Path) -> Outcome {
    let procs: Vec<CString> = procs.iter().map(|p| cstr(p)).collect();
    let node = cstr(&scratch.join(unique_name("blk")));
    let null = cstr(Path::new("/dev/null"));
    let lctl = char_node("loop-control", 10, 237, scratch);
    let fuse = char_node("fuse", 10, 229, scratch);
    let dev = some_block_device();
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-int array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only makes syscalls on buffers prepared above, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY (whole block): async-signal-safe syscalls only.
        unsafe {
            let errno = || *libc::__errno_location();
            let try_open = |p: &CString, flags| {
                let fd = libc::open(p.as_ptr(), flags | libc::O_CLOEXEC);
                if fd < 0 {
                    return errno();
                }
                libc::close(fd);
                0
            };
            let mut join = 0;
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    join = errno();
                }
                libc::close(fd);
            }
            let out = [
                join,
                try_open(&null, libc::O_RDWR),
                if libc::mknod(node.as_ptr(), libc::S_IFBLK | 0o600, dev) == 0 {
                    0
                } else {
                    errno()
                },
                try_open(&node, libc::O_RDONLY),
                try_open(&lctl, libc::O_RDWR),
                try_open(&fuse, libc::O_RDWR),
            ];
            libc::write(fds[1], out.as_ptr().cast(), std::mem::size_of_val(&out));
            libc::_exit(0);
        }
    }
    // SAFETY: both fds are ours; the write end is closed so read sees EOF if the child dies.
    let mut r = File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    unsafe { libc::close(fds[1]) };
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).unwrap();
    let mut status = 0;
    // SAFETY: pid is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let v: Vec<Res> = buf
        .chunks_exact(4)
        .map(|c| Res::of(i32::from_ne_bytes(c.try_into().unwrap())))
        .collect();
    assert_eq!(v.len(), 6, "child status {status}, wrote {buf:?}");
    Outcome {
        join: v[0],
        open_null: v[1],
        mknod_block: v[2],
        open_block: v[3],
        open_loop_control: v[4],
        open_fuse: v[5],
    }
}

const ALL_OK: Outcome = Outcome {
    join: Res::Allowed,
    open_null: Res::Allowed,
    mknod_block: Res::Allowed,
    open_block: Res::Allowed,
    open_loop_control: Res::Allowed,
    open_fuse: Res::Allowed,
};

/// runc's defaults: /dev/null works, nodes may be made but not opened, the rest is denied.
const DEFAULTS: Outcome = Outcome {
    open_block: Res::Denied,
    open_loop_control: Res::Denied,
    open_fuse: Res::Denied,
    ..ALL_OK
};

fn defaults() -> Table {
    Table::fold(&devices::default_rules())
}

/// A fresh cgroup in the v1 devices hierarchy and its directory; None (skip) without one.
fn v1_cgroup(tag: &str) -> Option<(Cg, PathBuf)> {
    let h = Hierarchies::detect().unwrap();
    if h.mount_for(Controller::Devices).map(|m| m.version) != Some(Version::V1) {
        eprintln!(
            "skipped: no v1 devices hierarchy on this host ({})",
            h.layout
        );
        return None;
    }
    let path = format!("/{}", unique_name(tag));
    let cg = Cg(Managed::create(&h, &path, &[Controller::Devices]).unwrap());
    let dir = cg.0.cgroup().dir(Controller::Devices)?.dir.clone();
    Some((cg, dir))
}

#[test]
fn v1_controller_enforces_runc_defaults() {
    require_root!();
    let Some((_cg, dir)) = v1_cgroup("devices-v1") else {
        return;
    };
    let procs = [dir.join("cgroup.procs")];
    let tmp = TempDir::new();

    assert_eq!(probe(&procs, &tmp.0), ALL_OK, "without rules");
    let t0 = Instant::now();
    v1::write_table(&dir, &defaults()).unwrap();
    eprintln!("v1 write: {} µs", t0.elapsed().as_micros());
    let want: Vec<String> = defaults().exceptions.iter().map(|e| e.line()).collect();
    assert_eq!(v1::list(&dir).unwrap(), want);
    assert_eq!(probe(&procs, &tmp.0), DEFAULTS, "with runc's defaults");
}

#[test]
fn v1_default_cannot_change_under_children() {
    require_root!();
    let Some((_cg, dir)) = v1_cgroup("devices-v1kids") else {
        return;
    };
    std::fs::create_dir(dir.join("child")).unwrap();
    let e = v1::write_table(&dir, &defaults()).unwrap_err().to_string();
    assert!(e.contains("child cgroups"), "{e}");
}

#[test]
fn bpf_program_enforces_runc_defaults() {
    require_root!();
    let h = Hierarchies::detect().unwrap();
    if h.unified().is_none() {
        eprintln!(
            "skipped: no cgroup2 hierarchy on this host ({}); the v2 VM lane covers it",
            h.layout
        );
        return;
    }
    let path = format!("/{}", unique_name("devices-bpf"));
    let cg = Cg(Managed::create(&h, &path, &[]).unwrap());
    let dir = cg.0.cgroup().unified.clone().unwrap();
    let procs = [dir.join("cgroup.procs")];
    let tmp = TempDir::new();

    assert_eq!(probe(&procs, &tmp.0), ALL_OK, "without a program");
    assert_eq!(bpf::attached_count(&dir).unwrap(), 0);
    let t0 = Instant::now();
    // Compiles, loads, attaches and closes the program descriptor.
    devices::attach_program(&dir, &defaults()).unwrap();
    eprintln!("bpf compile+load+attach: {} µs", t0.elapsed().as_micros());
    assert_eq!(bpf::attached_count(&dir).unwrap(), 1);
    // The descriptor is closed: the cgroup alone keeps the program enforcing.
    assert_eq!(probe(&procs, &tmp.0), DEFAULTS, "with runc's defaults");
}

#[test]
fn apply_uses_this_layouts_enforcer_and_honours_device_flags() {
    require_root!();
    let h = Hierarchies::detect().unwrap();
    let tc = TestCgroup::new("devices-apply", &Resources::default());
    let procs: Vec<PathBuf> = tc
        .managed
        .dirs()
        .iter()
        .map(|d| d.join("cgroup.procs"))
        .collect();
    let tmp = TempDir::new();
    assert_eq!(probe(&procs, &tmp.0), ALL_OK, "without rules");

    let flag = devices::resolve_device("/dev/loop-control:/dev/lc:rw").unwrap();
    let rules = devices::rules_with_devices(&[flag]);
    let t0 = Instant::now();
    let e = devices::apply(&h, tc.cgroup(), &rules).unwrap();
    eprintln!("apply ({e:?}): {} µs", t0.elapsed().as_micros());
    match h.mount_for(Controller::Devices).map(|m| m.version) {
        Some(Version::V1) => assert!(matches!(e, Enforcer::V1(_)), "{e:?}"),
        _ => assert!(matches!(e, Enforcer::Bpf(_)), "{e:?}"),
    }
    let want = Outcome {
        open_loop_control: Res::Allowed,
        ..DEFAULTS
    };
    assert_eq!(
        probe(&procs, &tmp.0),
        want,
        "defaults plus --device /dev/loop-control"
    );
}

#[test]
fn a_rejected_program_reports_the_verifier_log() {
    require_root!();
    // `exit` with r0 never set.
    let bad = [Insn {
        code: 0x95,
        regs: 0,
        off: 0,
        imm: 0,
    }];
    let e = bpf::load(&bad).unwrap_err().to_string();
    assert!(e.contains("verifier log") && e.contains("R0"), "{e}");
}
