//! Privileges of the container's processes: docker's default 14 capabilities (bounding,
//! permitted, effective; inheritable and ambient empty), no_new_privs, RLIMIT_NOFILE 1024.

use crate::sys::ChildResult;

/// moby's default set (oci/caps/defaults.go): CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
/// SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DEFAULT_CAPS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

pub fn default_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0u64, |m, c| m | (1 << c))
}

/// Every capability up to `last` that this process's bounding set still holds
/// (`--privileged`: a launcher itself run with fewer cannot give more).
pub fn all_mask(last: u32) -> u64 {
    (0..=last.min(63))
        .filter(|&c| {
            // SAFETY: prctl with integer arguments; 1 = in the bounding set.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) == 1 }
        })
        .fold(0u64, |m, c| m | (1 << c))
}

/// The highest capability number the kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops to `mask` (bounding set first, while CAP_SETPCAP is still held).
pub fn drop_to(mask: u64, last: u32) -> ChildResult<()> {
    for cap in 0..=last {
        if mask & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: the kernel does not know this cap; nothing to drop.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(format!(
                        "dropping capability {cap} from the bounding set: {e}"
                    ));
                }
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data structs, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn no_new_privs() -> ChildResult<()> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))
}

/// RLIMIT_NOFILE soft = hard = 1024, the OCI spec default (runc, crun, youki).
pub fn rlimit_nofile(n: u64) -> ChildResult<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
        .map_err(|e| format!("setrlimit NOFILE: {e}"))
}

/// All of it, in runc's order (caps last but one, nnp last), keeping `mask`.
pub fn restrict(mask: u64, last: u32) -> ChildResult<()> {
    rlimit_nofile(1024)?;
    drop_to(mask, last)?;
    no_new_privs()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_has_fourteen_caps() {
        assert_eq!(super::default_mask().count_ones(), 14);
        // CAP_SYS_ADMIN (21) and CAP_SYS_PTRACE (19) are not in it
        assert_eq!(super::default_mask() & (1 << 21), 0);
        assert_eq!(super::default_mask() & (1 << 19), 0);
        assert_eq!(super::default_mask(), 0xa80425fb);
    }
}
