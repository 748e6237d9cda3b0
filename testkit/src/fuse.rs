//! What the kernel offers FUSE, and the io_uring counters of a FUSE server.

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
