//! A cgroup made for one test, in every controller cgsight uses, removed on drop.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use cgsight_cgroup::manage::CONTAINER_CONTROLLERS;
use cgsight_cgroup::{Hierarchies, Managed, Resources};

use crate::process::ChildGuard;
use crate::unique_name;

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
