//! A compiled filter in memory, ready to install after fork: no allocation, no libseccomp.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::error::{Error, Result};

/// One classic-BPF instruction, `struct sock_filter` of linux/filter.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct sock_fprog` of linux/filter.h.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

const INSN_BYTES: usize = 8;
/// BPF_MAXINSNS: the kernel refuses longer filters.
pub const MAX_INSNS: usize = 4096;

/// A seccomp BPF program. Build it before fork; install it in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Box<[SockFilter]>,
    /// SECCOMP_FILTER_FLAG_* from the profile (see [`crate::profile::filter_flags`]).
    flags: libc::c_ulong,
}

impl Program {
    /// Reads the kernel's layout (host byte order) as libseccomp exports it; the length must be
    /// whole instructions, 1..=4096 of them.
    pub fn from_bpf_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() % INSN_BYTES != 0 {
            return Err(Error::BadProgram(format!(
                "{} bytes is not whole instructions",
                bytes.len()
            )));
        }
        let count = bytes.len() / INSN_BYTES;
        if count == 0 || count > MAX_INSNS {
            return Err(Error::BadProgram(format!(
                "{count} instructions (allowed 1..={MAX_INSNS})"
            )));
        }
        let insns = bytes
            .chunks_exact(INSN_BYTES)
            .map(|c| {
                let b: [u8; INSN_BYTES] = c.try_into().unwrap_or_default();
                SockFilter {
                    code: u16::from_ne_bytes([b[0], b[1]]),
                    jt: b[2],
                    jf: b[3],
                    k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                }
            })
            .collect();
        Ok(Self { insns, flags: 0 })
    }

    /// The program in the kernel's layout, as [`Program::from_bpf_bytes`] reads it.
    pub fn to_bpf_bytes(&self) -> Vec<u8> {
        self.insns
            .iter()
            .flat_map(|i| {
                let mut b = [0u8; INSN_BYTES];
                b[..2].copy_from_slice(&i.code.to_ne_bytes());
                b[2] = i.jt;
                b[3] = i.jf;
                b[4..].copy_from_slice(&i.k.to_ne_bytes());
                b
            })
            .collect()
    }

    /// The same program installed with these SECCOMP_FILTER_FLAG_* bits.
    pub fn with_flags(self, flags: libc::c_ulong) -> Self {
        Self { flags, ..self }
    }

    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Installs the filter on the calling thread. Async-signal-safe: one syscall on memory
    /// prepared before fork. The caller needs no_new_privs set, or CAP_SYS_ADMIN.
    pub fn install(&self) -> std::result::Result<(), Errno> {
        // WAIT_KILLABLE_RECV is about the listener; without one the kernel says EINVAL.
        self.seccomp(self.flags & !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
            .map(drop)
    }

    /// Installs the filter and returns its user-notification fd: syscalls whose action is
    /// [`crate::Action::Notify`] wait until a supervisor answers on it. Async-signal-safe.
    pub fn install_with_listener(&self) -> std::result::Result<OwnedFd, Errno> {
        let mut flags = self.flags | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            // The kernel takes TSYNC with a listener only when a sync failure is ESRCH.
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
        let fd = self.seccomp(flags)?;
        let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
        // SAFETY: with NEW_LISTENER the kernel returns a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn seccomp(&self, flags: libc::c_ulong) -> std::result::Result<libc::c_long, Errno> {
        let prog = SockFprog {
            // from_bpf_bytes bounds the length to 4096, which fits.
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr(),
        };
        // SAFETY: prog points at self.insns, alive for the call; the kernel copies it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                flags,
                &prog as *const SockFprog,
            )
        };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_bad_lengths_are_refused() {
        // BPF_RET|BPF_K, SECCOMP_RET_ALLOW
        let allow = [0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x7f];
        let ret = 0x06u16.to_ne_bytes();
        let k = 0x7fff_0000u32.to_ne_bytes();
        let insn = [ret[0], ret[1], 0, 0, k[0], k[1], k[2], k[3]];
        let p = Program::from_bpf_bytes(&insn).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p.to_bpf_bytes(), insn);
        assert!(Program::from_bpf_bytes(&allow[..7]).is_err());
        assert!(Program::from_bpf_bytes(&[]).is_err());
        assert!(Program::from_bpf_bytes(&vec![0u8; (MAX_INSNS + 1) * 8]).is_err());
    }
}
