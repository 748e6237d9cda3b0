//! The container's filesystem, built inside its private mount namespace (so nothing here is
//! visible on, or has to be unmounted from, the host): overlay root, the runtime defaults
//! (reference/runtime-defaults.md), the FUSE views, volumes, then pivot_root.

use std::fs;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::security::Device;
use crate::spec::Volume;
use crate::sys::{do_mount, ChildResult};

/// Files of the FUSE views bound over the container's /proc.
pub const PROC_VIEWS: [&str; 11] = [
    "meminfo",
    "cpuinfo",
    "stat",
    "uptime",
    "loadavg",
    "diskstats",
    "swaps",
    "vmstat",
    "pressure/cpu",
    "pressure/memory",
    "pressure/io",
];
/// Masked as docker does (an empty read-only tmpfs on directories, /dev/null on files);
/// powercap exposes RAPL energy counters, a known side channel.
const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Runtime state a host-root container must not read: ours (other containers' layers and
/// states) and other runtimes' well-known directories. Hidden when present in the root.
pub const HOST_STATE_DIRS: [&str; 11] = [
    "/var/lib/cgsight",
    "/run/cgsight",
    "/var/lib/docker",
    "/run/docker",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/containers",
    "/run/containers",
    "/run/runc",
    "/run/crun",
    "/var/lib/kubelet",
];

/// How the container's own cgroup appears at /sys/fs/cgroup.
#[derive(Clone, Debug)]
pub enum CgroupView {
    /// v1 / hybrid: a tmpfs with one read-only bind per hierarchy (name, host dir).
    Binds(Vec<(String, PathBuf)>),
    /// Pure v2: a cgroup2 mount made inside the cgroup namespace.
    Cgroup2,
}

#[derive(Clone, Debug)]
pub struct RootPlan {
    pub lower: PathBuf,
    /// An image's layer directories, top first; when given they replace `lower`.
    pub image_lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub volumes: Vec<Volume>,
    /// The FUSE views' mountpoint, when they are in use.
    pub views: Option<PathBuf>,
    pub cgroup: CgroupView,
    /// Directories covered by an empty read-only tmpfs (host-root mode: see
    /// [`HOST_STATE_DIRS`]).
    pub hide: Vec<PathBuf>,
    /// `--device` nodes to create (the cgroup's rules allow them).
    pub devices: Vec<Device>,
    /// `--userns auto`: the container's ids, so a `--device` node's owner is the one the
    /// container sees (host root's node becomes container root's).
    pub ids: Option<crate::userns::IdRange>,
    /// `--privileged`: the host's device nodes in /dev, /sys and the cgroup tree writable, no
    /// masked or read-only paths.
    pub privileged: bool,
    /// `--userns auto` with a `--rootfs` or an image: idmapped clones of the root's
    /// directories, attached before the overlay is mounted.
    pub idmap: Option<Idmap>,
}

/// The directories container root must see as its own, and where their idmapped clones go.
#[derive(Clone, Debug)]
pub struct Idmap {
    /// A user namespace with the container's maps (the supervisor keeps it open until exec).
    pub userns: RawFd,
    /// (source, mount point). For a `--rootfs`: the directory onto `lower`. For an image: each
    /// layer onto the entry of `image_lowers` at the same index.
    pub trees: Vec<(PathBuf, PathBuf)>,
    /// The working directory while the overlay is mounted: the image's mount points are named
    /// relative to it, so a long layer list stays within the one-page mount option limit.
    pub base: PathBuf,
}

fn inside(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn mkdir_p(p: &Path) -> ChildResult<()> {
    fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))
}

/// Bind `src` on `dst`, read-only if asked (a bind ignores MS_RDONLY; it needs a remount).
fn bind(src: &Path, dst: &Path, readonly: bool, recursive: bool) -> ChildResult<()> {
    let mut f = MsFlags::MS_BIND;
    if recursive {
        f |= MsFlags::MS_REC;
    }
    do_mount(Some(src), dst, None, f, None)?;
    if readonly {
        remount_ro(dst, MsFlags::empty())?;
    }
    Ok(())
}

fn remount_ro(dst: &Path, extra: MsFlags) -> ChildResult<()> {
    do_mount(
        None,
        dst,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | extra,
        None,
    )
}

/// Everything up to and including pivot_root. Runs in the container's child after
/// unshare(CLONE_NEWNS|CLONE_NEWCGROUP|...), as pid 1 of the new pid namespace.
pub fn build_root(p: &RootPlan) -> ChildResult<()> {
    // Nothing we mount may propagate back to the host.
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    if let Some(im) = &p.idmap {
        // SAFETY: the supervisor keeps this descriptor open until the child has exec'd.
        let fd = unsafe { BorrowedFd::borrow_raw(im.userns) };
        nix::unistd::chdir(&im.base).map_err(|e| format!("chdir {}: {e}", im.base.display()))?;
        for (src, at) in &im.trees {
            let tree =
                crate::userns::idmap::idmapped_tree(src, fd, false).map_err(|e| e.to_string())?;
            crate::userns::idmap::attach_tree(tree, at).map_err(|e| e.to_string())?;
        }
    }
    let lowers = if p.image_lowers.is_empty() {
        std::slice::from_ref(&p.lower)
    } else {
        p.image_lowers.as_slice()
    };
    for path in lowers.iter().chain([&p.upper, &p.work]) {
        let s = path.to_string_lossy();
        if s.contains([',', ':']) {
            return Err(format!("overlay paths cannot contain ',' or ':': {s}"));
        }
    }
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        p.upper.display(),
        p.work.display()
    );
    if !p.image_lowers.is_empty() {
        // An image container's upper may be committed as a layer: a tar layer cannot express
        // overlay's redirect or metacopy entries, so the kernel must not make any.
        opts.push_str(",redirect_dir=off,metacopy=off");
    }
    do_mount(
        Some(Path::new("overlay")),
        &p.merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )?;
    let r = &p.merged;
    let nsx = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;

    // /proc: a new procfs instance, so only this pid namespace's processes show.
    let proc_dir = inside(r, "/proc");
    mkdir_p(&proc_dir)?;
    do_mount(Some(Path::new("proc")), &proc_dir, Some("proc"), nsx, None)?;

    setup_dev(r)?;
    if p.privileged {
        // Still the host's /dev here: the root is switched at the end.
        crate::hostdev::copy_nodes(Path::new("/dev"), &inside(r, "/dev"))?;
    }
    for d in &p.devices {
        device_node(r, d, p.ids.as_ref())?;
    }

    // /sys: a fresh sysfs (it shows this net namespace's devices), made read-only per mount
    // with a bind remount (a plain ro mount would conflict with a host rw superblock under
    // --net host).
    let sys = inside(r, "/sys");
    mkdir_p(&sys)?;
    do_mount(Some(Path::new("sysfs")), &sys, Some("sysfs"), nsx, None)?;
    if !p.privileged {
        remount_ro(&sys, nsx)?;
    }
    let cg_ro = if p.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };

    let cg = inside(r, "/sys/fs/cgroup");
    match &p.cgroup {
        CgroupView::Cgroup2 => {
            do_mount(
                Some(Path::new("cgroup2")),
                &cg,
                Some("cgroup2"),
                nsx | cg_ro,
                None,
            )?;
        }
        CgroupView::Binds(binds) => {
            do_mount(
                Some(Path::new("tmpfs")),
                &cg,
                Some("tmpfs"),
                nsx,
                Some("mode=755"),
            )?;
            for (name, host) in binds {
                let d = cg.join(name);
                mkdir_p(&d)?;
                bind(host, &d, !p.privileged, false)?;
            }
            remount_ro(&cg, nsx)?;
        }
    }

    if let Some(v) = &p.views {
        for f in PROC_VIEWS {
            let src = v.join("proc").join(f);
            let dst = proc_dir.join(f);
            if dst.exists() {
                bind(&src, &dst, false, false)?;
            }
        }
        let src = v.join("sys/devices/system/cpu");
        let dst = inside(r, "/sys/devices/system/cpu");
        if src.is_dir() && dst.is_dir() {
            bind(&src, &dst, false, false)?;
        }
    }

    // docker's --privileged drops the masks and read-only paths too.
    let (masked, readonly): (&[&str], &[&str]) = if p.privileged {
        (&[], &[])
    } else {
        (&MASKED, &READONLY)
    };
    for m in masked {
        let t = inside(r, m);
        match fs::symlink_metadata(&t) {
            Err(_) => {} // missing paths are skipped, like runc
            Ok(md) if md.is_dir() => do_mount(
                Some(Path::new("tmpfs")),
                &t,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | nsx,
                Some("nr_blocks=1,nr_inodes=1"),
            )?,
            Ok(_) => bind(&inside(r, "/dev/null"), &t, false, false)?,
        }
    }
    for h in &p.hide {
        let t = inside(r, &h.to_string_lossy());
        // Only real directories: a symlink (/var/run) would take the mount elsewhere.
        if fs::symlink_metadata(&t).is_ok_and(|m| m.is_dir()) {
            do_mount(
                Some(Path::new("tmpfs")),
                &t,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | nsx,
                Some("mode=755,nr_blocks=1,nr_inodes=1"),
            )?;
        }
    }
    for ro in readonly {
        let t = inside(r, ro);
        if t.exists() {
            bind(&t, &t, false, true)?;
            remount_ro(&t, nsx)?;
        }
    }

    for v in &p.volumes {
        crate::volumes::mount_volume(r, v)?;
    }

    pivot(r)
}

fn setup_dev(r: &Path) -> ChildResult<()> {
    let dev = inside(r, "/dev");
    mkdir_p(&dev)?;
    do_mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    let rw = Mode::from_bits_truncate(0o666);
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        make_node(&dev.join(name), SFlag::S_IFCHR, rw, major, minor)?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts)?;
    do_mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    do_mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )?;
    let mq = dev.join("mqueue");
    mkdir_p(&mq)?;
    do_mount(
        Some(Path::new("mqueue")),
        &mq,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        None,
    )
}

/// A device node with exactly `mode` (mknod applies the umask, so the mode is set again).
pub(crate) fn make_node(
    p: &Path,
    kind: SFlag,
    mode: Mode,
    major: u64,
    minor: u64,
) -> ChildResult<()> {
    mknod(p, kind, mode, makedev(major, minor))
        .map_err(|e| format!("mknod {}: {e}", p.display()))?;
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        p,
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// A `--device` node: the host node's type, numbers, mode and owner (shifted into the
/// container's range under `--userns auto`), at its container path.
fn device_node(r: &Path, d: &Device, ids: Option<&crate::userns::IdRange>) -> ChildResult<()> {
    let p = inside(r, &d.container.to_string_lossy());
    if let Some(parent) = p.parent() {
        mkdir_p(parent)?;
    }
    let kind = if d.kind == 'b' {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFCHR
    };
    let _ = fs::remove_file(&p);
    let mode = Mode::from_bits_truncate(d.mode);
    make_node(&p, kind, mode, d.major.into(), d.minor.into())?;
    let (uid, gid) = match ids {
        // An owner outside the range stays as it is (the container sees it as nobody).
        Some(r) if d.uid < r.count && d.gid < r.count => (r.uid + d.uid, r.gid + d.gid),
        _ => (d.uid, d.gid),
    };
    nix::unistd::chown(
        &p,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| format!("chown {}: {e}", p.display()))
}

/// The pivot_root(".", ".") trick: no put_old directory needed; the old root ends up stacked
/// under the new one and is detached.
fn pivot(new_root: &Path) -> ChildResult<()> {
    nix::unistd::chdir(new_root).map_err(|e| format!("chdir {}: {e}", new_root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Brings up `lo` in the new network namespace (ioctl, so the rootfs needs no iproute2).
pub fn loopback_up() -> ChildResult<()> {
    // SAFETY: plain socket/ioctl calls with a zeroed, correctly sized ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        }
        let e = std::io::Error::last_os_error();
        libc::close(s);
        if r != 0 {
            return Err(format!("bringing up lo: {e}"));
        }
    }
    Ok(())
}
