//! `--userns auto` primitives on the real kernel: range allocation under a lock, maps written by
//! the parent, host-root files staying unreadable, idmapped trees. Needs root.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use cgsight_launcher::userns::{idmap, maps, Allocator, IdRange, Pool, UsernsError, RANGE_SIZE};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh `/var/tmp/cgsight-test-userns-*` dir (on disk: tmpfs cannot idmap before 6.3),
/// world-searchable so a container uid can reach what is inside; removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = PathBuf::from(format!(
            "/var/tmp/cgsight-test-userns-{tag}-{}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        TestDir(p)
    }
    fn sub(&self, name: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Mounts live only in the children's private mount namespaces, gone with them.
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn builtin_pool() -> Pool {
    Pool::from_entries("cgsight", &[], &[], &[]).unwrap()
}

/// A root-owned file with `mode`, as host root made it.
fn root_file(p: &Path, mode: u32) {
    fs::write(p, b"host root's\n").unwrap();
    std::os::unix::fs::chown(p, Some(0), Some(0)).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn pdeath_signal() -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
    sig
}

fn overflow_uid() -> u32 {
    fs::read_to_string("/proc/sys/kernel/overflowuid")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Forks; the child runs `child` and sends back its observations (or its error); the parent
/// runs `parent(pid)` meanwhile. The child is killed and reaped even if the parent panics.
fn in_child<const N: usize>(
    child: impl FnOnce() -> Result<[i32; N], String>,
    parent: impl FnOnce(i32),
) -> [i32; N] {
    let mut fds = [0i32; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe { libc::close(fds[0]) };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
        let bytes = match out {
            Ok(Ok(v)) => [b"O".as_slice(), &v.map(i32::to_le_bytes).concat()].concat(),
            Ok(Err(e)) => [b"E".as_slice(), e.as_bytes()].concat(),
            Err(_) => b"Echild panicked".to_vec(),
        };
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
    let _reap = Reap(pid);
    unsafe { libc::close(fds[1]) };
    parent(pid);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = unsafe { libc::read(fds[0], chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
    unsafe { libc::close(fds[0]) };
    match buf.split_first() {
        Some((b'O', rest)) if rest.len() == 4 * N => {
            std::array::from_fn(|i| i32::from_le_bytes(rest[4 * i..4 * i + 4].try_into().unwrap()))
        }
        Some((b'E', msg)) => panic!("child: {}", String::from_utf8_lossy(msg)),
        _ => panic!("child sent {buf:?}"),
    }
}

fn sys<T>(r: nix::Result<T>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// In the child: a private mount namespace, so its mounts never reach the host.
fn private_mounts() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    sys(
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS),
        "unshare",
    )?;
    sys(
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
        "make / private",
    )
}

fn overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<(), String> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    sys(
        nix::mount::mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        ),
        "mount overlay",
    )
}

/// The writable layer as the launcher prepares it: upper, work and merged dirs, and a range
/// (allocated from the built-in pool) whose root owns upper and work.
struct Writable {
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    range: IdRange,
}

fn writable(dir: &TestDir) -> Writable {
    let (upper, work, merged) = (
        dir.sub("upper", 0o755),
        dir.sub("work", 0o700),
        dir.sub("merged", 0o755),
    );
    let range = Allocator::new(dir.0.join("state"), builtin_pool())
        .allocate("c")
        .unwrap();
    idmap::chown_writable(&[&upper, &work], &range).unwrap();
    Writable {
        upper,
        work,
        merged,
        range,
    }
}

type Shared = std::cell::Cell<Option<maps::Handshake>>;

fn handshake() -> Shared {
    std::cell::Cell::new(Some(maps::Handshake::new().unwrap()))
}

/// The child's part of the handshake (taken once, in the child).
fn child_side(hs: &Shared) -> Result<maps::ChildSide, String> {
    hs.take()
        .map(maps::Handshake::child)
        .ok_or_else(|| "no handshake".to_owned())
}

/// In the child: `src` idmapped through `userns`, mounted on `dst`.
fn mount_idmapped(src: &Path, userns: &std::os::fd::OwnedFd, dst: &Path) -> Result<(), String> {
    let tree = idmap::idmapped_tree(src, userns.as_fd(), false).map_err(|e| e.to_string())?;
    idmap::attach_tree(tree, dst).map_err(|e| e.to_string())
}

/// The parent's part: write `range`'s maps for the child once it has unshared.
fn map_child<'a>(hs: &'a Shared, range: &'a IdRange) -> impl FnOnce(i32) + 'a {
    move |pid| {
        let parent = hs.take().map(maps::Handshake::parent).unwrap();
        parent.map(pid, range).unwrap();
    }
}

#[test]
fn concurrent_allocations_are_disjoint_and_free_returns_the_range() {
    let dir = TestDir::new("alloc");
    let state = dir.0.join("state");
    let pool = builtin_pool();
    const N: usize = 16;
    // All start at once, so without the lock they would read the same records.
    let start = std::sync::Barrier::new(N);
    let ranges: Vec<IdRange> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let (state, pool, start) = (state.clone(), pool.clone(), &start);
                s.spawn(move || {
                    let alloc = Allocator::new(state, pool);
                    start.wait();
                    alloc.allocate(&format!("c{i}"))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    for (i, a) in ranges.iter().enumerate() {
        assert_eq!(a.count, RANGE_SIZE);
        assert!(pool.slots.contains(a), "{a:?} is not a pool slot");
        for b in &ranges[i + 1..] {
            assert!(!a.overlaps(b), "{a:?} and {b:?} overlap");
        }
    }
    let alloc = Allocator::new(&state, pool.clone());
    assert_eq!(
        alloc.allocate("c3").unwrap(),
        ranges[3],
        "allocation is idempotent"
    );
    assert_eq!(alloc.get("c3").unwrap(), Some(ranges[3]));

    alloc.free("c3").unwrap();
    assert_eq!(alloc.get("c3").unwrap(), None);
    assert_eq!(
        alloc.allocate("new").unwrap(),
        ranges[3],
        "the freed range is reused"
    );
    alloc.free("never-allocated").unwrap();

    let tiny = Pool {
        slots: pool.slots[..1].to_vec(),
    };
    let small = Allocator::new(dir.0.join("tiny"), tiny);
    small.allocate("one").unwrap();
    assert!(matches!(
        small.allocate("two"),
        Err(UsernsError::Exhausted(1))
    ));
}

#[test]
fn garbage_or_truncated_records_give_a_clear_error() {
    let dir = TestDir::new("garbage");
    let alloc = Allocator::new(&dir.0, builtin_pool());
    alloc.allocate("good").unwrap();
    for junk in [&b""[..], b"12 34", b"\xff\x00garbage", b"1 2 3 4"] {
        fs::write(dir.0.join("bad.range"), junk).unwrap();
        let err = alloc.allocate("next").unwrap_err();
        assert!(matches!(err, UsernsError::State { .. }), "{junk:?}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("bad.range") && msg.contains("remove it"),
            "{msg}"
        );
        assert!(alloc.get("bad").is_err());
    }
    alloc.free("bad").unwrap();
    let next = alloc.allocate("next").unwrap();
    assert!(!next.overlaps(&alloc.get("good").unwrap().unwrap()));
    assert!(matches!(alloc.allocate("../x"), Err(UsernsError::BadId(_))));
}

/// Root of the container is the range start; files host root keeps to itself stay unreadable.
/// Mirrors the launcher's order: overlay mounted by host root, pivot_root, then the user
/// namespace.
fn container_root_run(with_userns: bool) -> ([i32; 7], TestDir, IdRange) {
    let dir = TestDir::new("root");
    let lower = dir.sub("lower", 0o755);
    // Stands in for /etc/shadow.
    root_file(&lower.join("secret"), 0o600);
    // Group-readable by gid 0: readable if host root's supplementary groups leaked in.
    root_file(&lower.join("group-secret"), 0o640);
    let tmp = lower.join("tmp");
    fs::create_dir(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    let Writable {
        upper,
        work,
        merged,
        range,
    } = writable(&dir);
    let hs = handshake();
    let r = in_child(
        || {
            let side = hs.take().map(maps::Handshake::child);
            // Like a login root's: gid 0 as a supplementary group too, which must not leak.
            sys(
                nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(0)]),
                "setgroups",
            )?;
            // As the launcher's child has: the kernel drops it when the ids change.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
            private_mounts()?;
            overlay(&lower, &upper, &work, &merged)?;
            // As the launcher does: the user namespace comes after pivot_root (unshare of a
            // user namespace refuses a chrooted caller; a pivoted one is fine).
            sys(nix::unistd::chdir(&merged), "chdir")?;
            sys(nix::unistd::pivot_root(".", "."), "pivot_root")?;
            sys(
                nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH),
                "umount old root",
            )?;
            let merged = Path::new("/");
            if with_userns {
                side.ok_or("no handshake")?
                    .enter()
                    .map_err(|e| e.to_string())?;
            }
            Ok([
                nix::unistd::getuid().as_raw() as i32,
                nix::unistd::getgid().as_raw() as i32,
                errno_of(fs::write(merged.join("created"), b"x")),
                errno_of(fs::read(merged.join("secret"))),
                errno_of(fs::write(merged.join("tmp/x"), b"x")),
                errno_of(fs::read(merged.join("group-secret"))),
                pdeath_signal(),
            ])
        },
        |pid| {
            if with_userns {
                map_child(&hs, &range)(pid);
            }
        },
    );
    (r, dir, range)
}

#[test]
fn container_root_is_the_range_and_cannot_read_host_root_files() {
    let ([uid, gid, created, secret, tmp, group, pdeath], dir, range) = container_root_run(true);
    assert_eq!((uid, gid), (0, 0), "root inside the user namespace");
    assert_eq!(created, 0, "container root writes its own root dir");
    assert_eq!(
        secret,
        libc::EACCES,
        "a 0600 host-root file must stay unreadable"
    );
    assert_eq!(
        group,
        libc::EACCES,
        "host root's groups must not come along"
    );
    assert_eq!(
        pdeath,
        libc::SIGKILL,
        "the parent-death signal survives becoming root"
    );
    assert_eq!(
        tmp, 0,
        "copy-up under a host-root 1777 dir works (host root copies up)"
    );
    for f in ["upper/created", "upper/tmp/x"] {
        let m = fs::metadata(dir.0.join(f)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (range.uid, range.gid),
            "{f} on the host"
        );
    }
}

#[test]
fn without_the_user_namespace_the_same_read_succeeds() {
    let ([uid, _, created, secret, _, group, _], dir, _) = container_root_run(false);
    assert_eq!(uid, 0);
    assert_eq!(created, 0);
    assert_eq!(
        secret, 0,
        "host root reads it: the EACCES above is the namespace's doing"
    );
    assert_eq!(group, 0);
    assert_eq!(fs::metadata(dir.0.join("upper/created")).unwrap().uid(), 0);
}

/// A root-owned file under a `--rootfs`-like dir, seen from container root through an idmapped
/// clone (or a plain bind): [owner uid, errno of opening it for writing].
fn rootfs_run(idmapped: bool) -> [i32; 2] {
    let dir = TestDir::new("idmap");
    let rootfs = dir.sub("rootfs", 0o755);
    root_file(&rootfs.join("owned"), 0o644);
    let mnt = dir.sub("mnt", 0o755);
    let range = Allocator::new(dir.0.join("state"), builtin_pool())
        .allocate("idmap")
        .unwrap();
    let userns = maps::userns_fd(&range).unwrap();
    let hs = handshake();
    in_child(
        || {
            let side = child_side(&hs)?;
            private_mounts()?;
            if idmapped {
                mount_idmapped(&rootfs, &userns, &mnt)?;
            } else {
                sys(
                    nix::mount::mount(
                        Some(&rootfs),
                        &mnt,
                        None::<&str>,
                        nix::mount::MsFlags::MS_BIND,
                        None::<&str>,
                    ),
                    "bind",
                )?;
            }
            side.enter().map_err(|e| e.to_string())?;
            let f = mnt.join("owned");
            Ok([
                fs::metadata(&f).map_err(|e| e.to_string())?.uid() as i32,
                errno_of(fs::OpenOptions::new().write(true).open(&f)),
            ])
        },
        map_child(&hs, &range),
    )
}

#[test]
fn idmapped_rootfs_files_belong_to_container_root() {
    assert_eq!(
        rootfs_run(true),
        [0, 0],
        "owned by and writable for container root"
    );
}

#[test]
fn without_idmap_rootfs_files_are_nobodys() {
    assert_eq!(
        rootfs_run(false),
        [overflow_uid() as i32, libc::EACCES],
        "host root's file seen from the user namespace"
    );
}

/// The `--rootfs` flow end to end: overlay (by host root) on an idmapped lower, then the user
/// namespace; container root edits a file the rootfs's root owns, which copies up as its own.
#[test]
fn overlay_on_an_idmapped_rootfs_copies_up_as_container_root() {
    let dir = TestDir::new("ovl");
    let rootfs = dir.sub("rootfs", 0o755);
    root_file(&rootfs.join("owned"), 0o644);
    let staging = dir.sub("lower", 0o755);
    let Writable {
        upper,
        work,
        merged,
        range,
    } = writable(&dir);
    let userns = maps::userns_fd(&range).unwrap();
    let hs = handshake();
    let [uid, write] = in_child(
        || {
            let side = child_side(&hs)?;
            private_mounts()?;
            let tree =
                idmap::idmapped_tree(&rootfs, userns.as_fd(), false).map_err(|e| e.to_string())?;
            idmap::attach_tree(tree, &staging).map_err(|e| e.to_string())?;
            overlay(&staging, &upper, &work, &merged)?;
            side.enter().map_err(|e| e.to_string())?;
            let f = merged.join("owned");
            Ok([
                fs::metadata(&f).map_err(|e| e.to_string())?.uid() as i32,
                errno_of(fs::write(&f, b"edited\n")),
            ])
        },
        map_child(&hs, &range),
    );
    assert_eq!((uid, write), (0, 0));
    let up = fs::metadata(upper.join("owned")).unwrap();
    assert_eq!(up.uid(), range.uid, "copied up with the mapped owner");
    assert_eq!(fs::read(rootfs.join("owned")).unwrap(), b"host root's\n");
}

#[test]
fn idmap_where_the_filesystem_cannot_is_a_clear_error() {
    let userns = maps::userns_fd(&builtin_pool().slots[0]).unwrap();
    // procfs has no idmapped mounts on any kernel; the clone is detached and dropped.
    let err = idmap::idmapped_tree(Path::new("/proc"), userns.as_fd(), false).unwrap_err();
    assert!(matches!(err, UsernsError::IdmapUnsupported { .. }), "{err}");
    assert!(err.to_string().contains("cannot idmap /proc"), "{err}");
    let missing = Path::new("/var/tmp/cgsight-test-userns-missing");
    assert!(idmap::idmapped_tree(missing, userns.as_fd(), false).is_err());
}

/// Container root in a private net namespace made before its user namespace: [errno of
/// binding port 80, errno of opening an ICMP echo socket].
fn net_run(grant: bool) -> [i32; 2] {
    let range = builtin_pool().slots[0];
    let hs = handshake();
    in_child(
        || {
            let side = child_side(&hs)?;
            sys(
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET),
                "unshare(CLONE_NEWNET)",
            )?;
            if grant {
                cgsight_launcher::userns::net::open_low_ports_and_ping(&range)
                    .map_err(|e| e.to_string())?;
            }
            side.enter().map_err(|e| e.to_string())?;
            // SAFETY: socket(2) with constants; the fd is closed right away.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
            let ping = errno_of(if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                unsafe { libc::close(fd) };
                Ok(())
            });
            Ok([errno_of(std::net::TcpListener::bind("0.0.0.0:80")), ping])
        },
        map_child(&hs, &range),
    )
}

#[test]
fn container_root_gets_low_ports_and_ping_in_its_net_namespace() {
    let host = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_eq!(
        net_run(false)[0],
        libc::EACCES,
        "without the sysctls: no port 80"
    );
    assert_eq!(net_run(true), [0, 0]);
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host,
        "the host's own setting is untouched"
    );
}

#[test]
fn pool_loads_the_owner_by_name_or_uid_and_falls_back_to_the_builtin_range() {
    let dir = TestDir::new("pool");
    let (u, g) = (dir.0.join("subuid"), dir.0.join("subgid"));
    // root is uid 0 everywhere: its numeric key must match too.
    fs::write(
        &u,
        "root:100000:65536\n0:300000:65536\nother:500000:65536\n",
    )
    .unwrap();
    fs::write(&g, "root:200000:131072\n").unwrap();
    let pool = Pool::load("root", &u, &g).unwrap();
    let uids: Vec<u32> = pool.slots.iter().map(|s| s.uid).collect();
    let gids: Vec<u32> = pool.slots.iter().map(|s| s.gid).collect();
    assert_eq!((uids, gids), (vec![100000, 300000], vec![200000, 265536]));

    let missing = dir.0.join("absent");
    assert_eq!(
        Pool::load("root", &missing, &missing).unwrap(),
        builtin_pool()
    );
    fs::write(&u, "root:100000\n").unwrap();
    let err = Pool::load("root", &u, &g).unwrap_err().to_string();
    assert!(err.contains("subuid: line 1"), "{err}");
}

/// Joining (`cgsight exec`) gives root of the range, and setns into the host-root-owned
/// namespaces works before it, not after: so the user namespace is joined last.
#[test]
fn joining_makes_root_of_the_range_and_must_come_last() {
    let range = builtin_pool().slots[7];
    let userns = maps::userns_fd(&range).unwrap();
    let mnt = fs::File::open("/proc/self/ns/mnt").unwrap();
    let setns_mnt = || {
        // SAFETY: setns on an open namespace fd.
        errno_of(
            match unsafe { libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            },
        )
    };
    let r = in_child(
        || {
            let before = setns_mnt();
            maps::join(userns.as_fd()).map_err(|e| e.to_string())?;
            Ok([before, nix::unistd::getuid().as_raw() as i32, setns_mnt()])
        },
        |_| {},
    );
    assert_eq!(r, [0, 0, libc::EPERM]);
}
