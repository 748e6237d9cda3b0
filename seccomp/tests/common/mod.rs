//! Forked probes: a child installs a filter (or not), tries syscalls and reports each result
//! through a pipe. The child only makes raw syscalls on memory prepared before fork.

#![allow(dead_code)]

use std::os::fd::AsRawFd;

use cgsight_seccomp::Program;

/// Syscalls tried, in this order (unshare last: it changes what later calls may do).
pub const PROBES: [&str; 13] = [
    "getpid",
    "read",
    "write",
    "socket(AF_UNIX)",
    "clone(SIGCHLD)",
    "personality(query)",
    "mount",
    "keyctl",
    "bpf",
    "clone3",
    "socket(AF_VSOCK)",
    "clone(CLONE_NEWUSER)",
    "unshare(CLONE_NEWUSER)",
];

/// What a probe returned: `Ok(value)` or `Err(errno)`.
pub type Outcome = Result<i64, i32>;

/// How the child sets up before probing.
#[derive(Clone, Copy)]
pub enum Setup<'a> {
    None,
    Install(&'a Program),
}

/// Runs [`PROBES`] in a forked child and returns (name, outcome) pairs.
pub fn run(setup: Setup) -> Vec<(&'static str, Outcome)> {
    let devnull = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // SAFETY: the child below makes only async-signal-safe raw syscalls, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: raw syscalls on stack memory and fds opened before fork.
        unsafe { child(setup, devnull.as_raw_fd(), wr.as_raw_fd()) }
    }
    drop(wr);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut bytes).unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "probe child: {status:#x}"
    );
    let values: Vec<i64> = bytes
        .chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        values.len(),
        PROBES.len(),
        "probe child reported {} results",
        values.len()
    );
    PROBES
        .iter()
        .zip(values)
        .map(|(n, v)| (*n, if v < 0 { Err(-v as i32) } else { Ok(v) }))
        .collect()
}

/// The outcome of one named probe.
pub fn outcome(results: &[(&str, Outcome)], name: &str) -> Outcome {
    results
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, o)| *o)
        .unwrap()
}

unsafe fn child(setup: Setup, devnull: i32, out: i32) -> ! {
    let mut results = [0i64; PROBES.len()];
    let ret = |r: libc::c_long| {
        if r < 0 {
            -i64::from(*libc::__errno_location())
        } else {
            r
        }
    };
    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if let Setup::Install(p) = setup {
        if p.install().is_err() {
            libc::_exit(3);
        }
    }
    let mut buf = [0u8; 1];
    results[0] = ret(libc::syscall(libc::SYS_getpid));
    results[1] = ret(libc::syscall(libc::SYS_read, devnull, buf.as_mut_ptr(), 1));
    results[2] = ret(libc::syscall(libc::SYS_write, devnull, buf.as_ptr(), 1));
    let s = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
    results[3] = ret(s);
    if s >= 0 {
        libc::close(s as i32);
    }
    results[4] = clone_and_reap(libc::SIGCHLD as libc::c_long);
    results[5] = ret(libc::syscall(libc::SYS_personality, 0xffff_ffffu64));
    results[6] = ret(libc::syscall(
        libc::SYS_mount,
        c"none".as_ptr(),
        c"/cgsight-test-no-such-dir".as_ptr(),
        c"tmpfs".as_ptr(),
        0,
        0,
    ));
    // KEYCTL_GET_KEYRING_ID of the process keyring, without creating it.
    results[7] = ret(libc::syscall(libc::SYS_keyctl, 0, -2i64, 0));
    // An invalid bpf command: EINVAL from the kernel, EPERM from the filter.
    results[8] = ret(libc::syscall(libc::SYS_bpf, -1i64, 0, 0));
    // clone3 with a NULL, zero-sized argument: EINVAL from the kernel, ENOSYS from the filter.
    results[9] = ret(libc::syscall(libc::SYS_clone3, 0, 0));
    let s = libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0);
    results[10] = ret(s);
    if s >= 0 {
        libc::close(s as i32);
    }
    results[11] = clone_and_reap((libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long);
    results[12] = ret(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER));
    let len = std::mem::size_of_val(&results);
    let w = libc::write(out, results.as_ptr().cast(), len);
    libc::_exit(if w == len as isize { 0 } else { 4 });
}

/// Raw clone(2) with `flags` and no new stack (fork-like): 0 when a child ran, -errno if not.
unsafe fn clone_and_reap(flags: libc::c_long) -> i64 {
    let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
    if pid == 0 {
        libc::_exit(0);
    }
    if pid < 0 {
        return -i64::from(*libc::__errno_location());
    }
    let mut status = 0;
    libc::waitpid(pid as i32, &mut status, 0);
    0
}
