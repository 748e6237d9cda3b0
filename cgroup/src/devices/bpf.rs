//! The three `bpf(2)` commands the v2 enforcer needs: load a `CGROUP_DEVICE` program, attach it
//! to a cgroup2 directory, and count what is attached there. Raw syscalls on `#[repr(C)]`
//! prefixes of `union bpf_attr` (the kernel zero-fills the rest of the union).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::program::Insn;
use super::DeviceError;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs per cgroup, and descendants may add their own: every one of them must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The program calls no helper, so no GPL-only one: any license string loads. Ours is the
/// project's.
const LICENSE: &str = "Apache-2.0";
/// Shows in `bpftool prog` so an operator can tell whose program it is.
const PROG_NAME: &[u8] = b"cgsight_devices";
/// Enough for the verifier's account of a rejected program of this size.
const LOG_SIZE: usize = 64 * 1024;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, initialised #[repr(C)] prefix of union bpf_attr of the given size;
    // pointers inside it point at buffers that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads `insns` as a device program. On rejection, loads again with the verifier log on, so
/// the error says why.
pub fn load(insns: &[Insn]) -> Result<OwnedFd, DeviceError> {
    let license = CString::new(LICENSE).unwrap_or_default();
    let mut name = [0u8; 16];
    for (d, s) in name.iter_mut().zip(PROG_NAME.iter().take(15)) {
        *d = *s;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let source = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    attr.log_level = 1;
    attr.log_size = LOG_SIZE as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
        // Passed the second time (e.g. a transient ENOMEM): use it.
        return Ok(owned(fd));
    }
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(log.get(..end).unwrap_or_default());
    Err(DeviceError::Bpf {
        op: format!("loading a {}-instruction device program", insns.len()),
        source,
        log: text.trim().to_owned(),
    })
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn open_dir(dir: &Path) -> Result<File, DeviceError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|source| DeviceError::Bpf {
            op: format!("opening cgroup {}", dir.display()),
            source,
            log: String::new(),
        })
}

/// Attaches `prog` to the cgroup2 directory `dir`. The cgroup then holds the program: the
/// caller may close `prog`, and the program goes when the cgroup is removed.
pub fn attach(dir: &Path, prog: &OwnedFd) -> Result<(), DeviceError> {
    let d = open_dir(dir)?;
    let mut attr = ProgAttachAttr {
        target_fd: d.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(drop)
        .map_err(|source| DeviceError::Bpf {
            op: format!("attaching the device program to {}", dir.display()),
            source,
            log: String::new(),
        })
}

/// How many device programs are attached to `dir` itself (not inherited from ancestors).
pub fn attached_count(dir: &Path) -> Result<u32, DeviceError> {
    let d = open_dir(dir)?;
    let mut attr = ProgQueryAttr {
        target_fd: d.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).map_err(|source| DeviceError::Bpf {
        op: format!("querying the device programs of {}", dir.display()),
        source,
        log: String::new(),
    })?;
    Ok(attr.prog_cnt)
}
