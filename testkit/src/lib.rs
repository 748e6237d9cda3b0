//! Test support: every resource a test makes is owned by a guard that removes it on drop, so a
//! failing (panicking) test cleans up too. Names are unique per process and call and start with
//! `cgsight-test-`, so parallel tests never collide and leftovers are easy to find.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cgsight_cgroup::manage::CONTAINER_CONTROLLERS;
use cgsight_cgroup::{Hierarchies, Managed, Resources};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `cgsight-test-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("cgsight-test-{tag}-{}-{n}", std::process::id())
}

/// Whether this kernel has FUSE over io_uring (Linux 6.14+ with CONFIG_FUSE_IO_URING).
pub fn kernel_has_fuse_io_uring() -> bool {
    std::path::Path::new("/sys/module/fuse/parameters/enable_uring").exists()
}

/// The `cgsight fs --io-uring` value tests serve with: the io_uring transport where the kernel
/// has it (so both transports are exercised: io_uring on the host, /dev/fuse in the 6.1 VM
/// lanes), and explicitly, so the result does not depend on the machine's module setting.
pub fn fs_io_uring_arg() -> &'static str {
    if kernel_has_fuse_io_uring() {
        "on"
    } else {
        "off"
    }
}

/// The sum of the completion-queue tails of the io_uring instances a process holds (from
/// /proc/PID/fdinfo, the kernel's own counters), or None when it holds none.
pub fn io_uring_completions(pid: i32) -> Option<u64> {
    let mut total = None;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let is_ring = std::fs::read_link(fd.path())
            .map(|l| l.to_string_lossy() == "anon_inode:[io_uring]")
            .unwrap_or(false);
        if !is_ring {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .ok()?;
        let tail = info
            .lines()
            .find_map(|l| l.strip_prefix("CqTail:"))
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        total = Some(total.unwrap_or(0) + tail);
    }
    total
}

/// True when running as root; the live tests need it.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A cgroup removed (after killing what is in it) on drop.
pub struct TestCgroup {
    pub managed: Managed,
    pub path: String,
}

impl TestCgroup {
    /// Creates `/<unique name>` in every controller cgsight uses, with `res` applied.
    pub fn new(tag: &str, res: &Resources) -> Self {
        let h = Hierarchies::detect().expect("detect cgroup hierarchies");
        let path = format!("/{}", unique_name(tag));
        Self::at(&h, &path, res)
    }

    /// Creates the cgroup at `path` (which must contain `cgsight-test-`).
    pub fn at(h: &Hierarchies, path: &str, res: &Resources) -> Self {
        assert!(
            path.contains("cgsight-test-"),
            "test cgroups must be named cgsight-test-*"
        );

        let managed = Managed::create(h, path, &CONTAINER_CONTROLLERS).expect("create test cgroup");
        let tc = TestCgroup {
            managed,
            path: path.to_owned(),
        };
        tc.managed.apply(res).expect("apply test limits");
        tc
    }

    pub fn cgroup(&self) -> &cgsight_cgroup::Cgroup {
        self.managed.cgroup()
    }

    /// Spawns `cmd` already inside this cgroup: the child moves itself in before exec, so none
    /// of its work runs unconfined.
    pub fn spawn(&self, cmd: &mut Command) -> ChildGuard {
        let procs: Vec<PathBuf> = self
            .managed
            .dirs()
            .iter()
            .map(|d| d.join("cgroup.procs"))
            .collect();
        spawn_in_cgroup(cmd, &procs).expect("spawn child in test cgroup")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.managed.kill_and_remove() {
            eprintln!("cgsight-testkit: cleaning up cgroup {}: {e}", self.path);
        }
    }
}

/// Spawns `cmd` after the child has written itself (`0`) into each `cgroup.procs` file.
pub fn spawn_in_cgroup(cmd: &mut Command, procs_files: &[PathBuf]) -> io::Result<ChildGuard> {
    let paths: Vec<CString> = procs_files
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    // SAFETY: between fork and exec the closure only calls open/write/close on prepared buffers.
    unsafe {
        cmd.pre_exec(move || {
            for p in &paths {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
            }
            Ok(())
        });
    }
    Ok(ChildGuard::new(cmd.spawn()?))
}

/// A child process killed and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard { child: Some(child) }
    }
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present")
    }
    /// Waits for exit, returning the status, within `timeout` (then kills it and panics).
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child().try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child().kill();
                panic!("child {} did not exit within {timeout:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    pub fn into_output(mut self) -> std::process::Output {
        self.child
            .take()
            .expect("child")
            .wait_with_output()
            .expect("wait")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A mount point detached (MNT_DETACH) on drop.
pub struct MountGuard {
    pub target: PathBuf,
}

impl MountGuard {
    pub fn new(target: impl Into<PathBuf>) -> Self {
        MountGuard {
            target: target.into(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A temporary directory (under /tmp unless asked, named cgsight-test-*) removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }
    /// Under `base` instead of /tmp (e.g. /var/tmp, for a directory on a real disk).
    pub fn new_in(base: &Path, tag: &str) -> Self {
        let path = base.join(unique_name(tag));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Polls `f` until it returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(100));
    }
}

/// Live tests need root; fail loudly rather than pass without testing anything.
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            $crate::is_root(),
            "this test creates real cgroups, mounts and namespaces: run it as root"
        );
    };
}
