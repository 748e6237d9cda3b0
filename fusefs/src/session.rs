//! An owned FUSE session: the mount made with our own /dev/fuse descriptor and the INIT
//! answered by us, so the descriptor can outlive any one server process (the holder keeps
//! it; each server is handed it). fuser cannot be used here: it neither gives its
//! descriptor away nor serves a connection whose INIT someone else answered.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;

use crate::abi;
use crate::error::Error;

/// Bytes a read of /dev/fuse needs: the largest request (a header and max_write bytes).
pub const READ_BUF: usize = crate::uring::PAYLOAD + 4096;

/// What INIT settled that a successor server must know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitState {
    /// The kernel's protocol minor: 40+ has FUSE_NOTIFY_RESEND.
    pub kernel_minor: u32,
}

impl InitState {
    pub fn has_resend(&self) -> bool {
        self.kernel_minor >= abi::RESEND_MINOR
    }
}

fn io_err(mp: &Path, what: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        path: mp.to_owned(),
        what,
        source,
    }
}

/// A new /dev/fuse descriptor (close-on-exec).
fn open_dev_fuse() -> std::io::Result<OwnedFd> {
    // SAFETY: open(2) of a constant path; the descriptor is owned at once.
    let raw = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Opens /dev/fuse and mounts the views' read-only filesystem at `mp` on it.
pub fn mount(mp: &Path) -> Result<OwnedFd, Error> {
    let fd = open_dev_fuse().map_err(|e| io_err(mp, "opening /dev/fuse", e))?;
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
        fd.as_raw_fd()
    );
    nix::mount::mount(
        Some("cgsight"),
        mp,
        Some("fuse"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| Error::Mount {
        path: mp.to_owned(),
        source: std::io::Error::from(e),
    })?;
    Ok(fd)
}

/// Reads the kernel's INIT from a fresh mount's descriptor and answers it: protocol 7.x
/// with x = min(the kernel's, 40), 128 KiB reads, /dev/fuse transport only.
pub fn answer_init(fd: BorrowedFd<'_>) -> std::io::Result<InitState> {
    answer_init_offering(fd, false).map(|(init, _)| init)
}

/// As [`answer_init`], and with `io_uring` also accepts FUSE over io_uring when the kernel
/// offers it; returns whether it did (a server must then REGISTER ring queues).
pub fn answer_init_offering(
    fd: BorrowedFd<'_>,
    io_uring: bool,
) -> std::io::Result<(InitState, bool)> {
    let mut buf = vec![0u8; READ_BUF];
    let n = loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed FUSE INIT");
    let req = buf.get(..n).ok_or_else(bad)?;
    let h = abi::InHeader::parse(req).ok_or_else(bad)?;
    if h.opcode != abi::INIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("first FUSE request is opcode {}, not INIT", h.opcode),
        ));
    }
    let body = req.get(abi::IN_HEADER_LEN..).ok_or_else(bad)?;
    let (major, minor, readahead, flags) = abi::init_in(body).ok_or_else(bad)?;
    let uring = io_uring
        && flags & abi::INIT_EXT != 0
        && abi::init_in_flags2(body).is_some_and(|f2| f2 & abi::INIT2_OVER_IO_URING != 0);
    let mut out = [0u8; abi::OUT_HEADER_LEN + abi::INIT_OUT_LEN];
    if major != 7 {
        // The kernel retries with our major when it is lower; we only speak 7.
        abi::put_out_header(
            &mut out,
            abi::OUT_HEADER_LEN as u32,
            -libc::EPROTO,
            h.unique,
        );
        let _ = nix::unistd::write(fd, &out[..abi::OUT_HEADER_LEN]);
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("FUSE major {major}"),
        ));
    }
    let payload = crate::uring::PAYLOAD as u32;
    let mut wanted = abi::INIT_ASYNC_READ | abi::INIT_BIG_WRITES | abi::INIT_MAX_PAGES;
    if uring {
        wanted |= abi::INIT_EXT;
    }
    abi::put_init_out(
        &mut out[abi::OUT_HEADER_LEN..],
        minor.min(abi::RESEND_MINOR),
        readahead.min(payload),
        flags & wanted,
        payload,
        (payload / 4096) as u16,
    );
    if uring {
        abi::set_init_out_flags2(&mut out[abi::OUT_HEADER_LEN..], abi::INIT2_OVER_IO_URING);
    }
    let len = out.len() as u32;
    abi::put_out_header(&mut out, len, 0, h.unique);
    nix::unistd::write(fd, &out)?;
    Ok((
        InitState {
            kernel_minor: minor,
        },
        uring,
    ))
}

/// A second descriptor on the same connection with its own queue of read requests
/// (FUSE_DEV_IOC_CLONE): closing it (the server dies) ends the requests read through it
/// with an error, where a shared descriptor would leave them waiting.
pub fn clone_dev(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let new = open_dev_fuse()?;
    let mut src = fd.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the source descriptor) from the pointer.
    let r = unsafe { libc::ioctl(new.as_raw_fd(), abi::DEV_IOC_CLONE as _, &mut src) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(new)
}

/// Asks the kernel to queue again every request read but not answered (Linux 6.9+): what
/// a dead server had taken goes to its successor.
pub fn notify_resend(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut out = [0u8; abi::OUT_HEADER_LEN];
    abi::put_out_header(&mut out, abi::OUT_HEADER_LEN as u32, 0, 0);
    // The notify code travels in the error field.
    out[4..8].copy_from_slice(&abi::NOTIFY_RESEND.to_le_bytes());
    nix::unistd::write(fd, &out)?;
    Ok(())
}
