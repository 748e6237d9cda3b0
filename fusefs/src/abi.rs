//! The few FUSE wire structures cgsight reads and writes itself: the io_uring transport and
//! the owned /dev/fuse session of the hand-over server (the fuser transport has its own). Layouts are the kernel's `include/uapi/linux/fuse.h`
//! (protocol 7.42+), little-endian, encoded field by field: no unsafe casts of buffers.

use crate::tree::Attr;

pub const LOOKUP: u32 = 1;
pub const FORGET: u32 = 2;
pub const INIT: u32 = 26;
pub const INTERRUPT: u32 = 36;
pub const BATCH_FORGET: u32 = 42;
pub const GETATTR: u32 = 3;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const IOCTL: u32 = 39;
pub const DESTROY: u32 = 38;

/// `struct fuse_in_header` and `struct fuse_out_header` sizes.
pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;
/// The notification code (in the out header's error field, unique 0) that makes the kernel
/// queue again every request a server read but did not answer (protocol 7.40, Linux 6.9).
pub const NOTIFY_RESEND: i32 = 7;
pub const RESEND_MINOR: u32 = 40;
/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
pub const DEV_IOC_CLONE: u64 = 0x8004_e500;
/// INIT flags cgsight asks for when offered: async reads, big writes, max_pages.
pub const INIT_ASYNC_READ: u32 = 1 << 0;
pub const INIT_BIG_WRITES: u32 = 1 << 5;
pub const INIT_MAX_PAGES: u32 = 1 << 22;
/// `FUSE_INIT_EXT`: the second flags word (`flags2`) of INIT is valid.
pub const INIT_EXT: u32 = 1 << 30;
/// `FUSE_OVER_IO_URING` (bit 41), as a bit of `flags2`.
pub const INIT2_OVER_IO_URING: u32 = 1 << (41 - 32);
pub const INIT_OUT_LEN: usize = 64;

/// `FOPEN_DIRECT_IO`: every read reaches the server, st_size is not trusted.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;

/// `struct fuse_uring_req_header`: in/out header (128), per-op header (128), ring entry info.
pub const URING_HEADER_LEN: usize = 128 + 128 + 32;
pub const URING_OP_IN: usize = 128;
pub const URING_ENT: usize = 256;
/// `enum fuse_uring_cmd`.
pub const URING_CMD_REGISTER: u32 = 1;
pub const URING_CMD_COMMIT_AND_FETCH: u32 = 2;

pub const ENTRY_OUT_LEN: usize = 128;
pub const ATTR_OUT_LEN: usize = 104;
pub const OPEN_OUT_LEN: usize = 16;
pub const STATFS_OUT_LEN: usize = 80;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// `struct fuse_in_header` (40 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InHeader {
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub pid: u32,
}

impl InHeader {
    pub fn parse(b: &[u8]) -> Option<InHeader> {
        let _extlen = u16_at(b, 36)?;
        Some(InHeader {
            opcode: u32_at(b, 4)?,
            unique: u64_at(b, 8)?,
            nodeid: u64_at(b, 16)?,
            pid: u32_at(b, 32)?,
        })
    }
}

/// `struct fuse_init_in`: the kernel's (major, minor, max_readahead, flags).
pub fn init_in(b: &[u8]) -> Option<(u32, u32, u32, u32)> {
    Some((u32_at(b, 0)?, u32_at(b, 4)?, u32_at(b, 8)?, u32_at(b, 12)?))
}

/// `struct fuse_init_in`'s `flags2` (the kernel's offer of flags 32..63).
pub fn init_in_flags2(b: &[u8]) -> Option<u32> {
    u32_at(b, 16)
}

/// Sets `struct fuse_init_out`'s `flags2` in a reply made by [`put_init_out`].
pub fn set_init_out_flags2(b: &mut [u8], flags2: u32) {
    put32(b, 32, flags2);
}

/// `struct fuse_init_out` (64 bytes).
pub fn put_init_out(
    b: &mut [u8],
    minor: u32,
    max_readahead: u32,
    flags: u32,
    max_write: u32,
    max_pages: u16,
) {
    b[..INIT_OUT_LEN].fill(0);
    put32(b, 0, 7);
    put32(b, 4, minor);
    put32(b, 8, max_readahead);
    put32(b, 12, flags);
    // max_background 16, congestion_threshold 12: as libfuse.
    b[16..18].copy_from_slice(&16u16.to_le_bytes());
    b[18..20].copy_from_slice(&12u16.to_le_bytes());
    put32(b, 20, max_write);
    put32(b, 24, 1);
    b[28..30].copy_from_slice(&max_pages.to_le_bytes());
}

/// Writes `struct fuse_out_header` (16 bytes): `error` is 0 or a negative errno.
pub fn put_out_header(b: &mut [u8], len: u32, error: i32, unique: u64) {
    put32(b, 0, len);
    put32(b, 4, error as u32);
    put64(b, 8, unique);
}

/// `struct fuse_uring_ent_in_out`: the request's commit id and payload size.
pub fn ring_ent(b: &[u8]) -> Option<(u64, u32)> {
    Some((u64_at(b, URING_ENT + 8)?, u32_at(b, URING_ENT + 16)?))
}

/// Sets the reply's payload size in `struct fuse_uring_ent_in_out`.
pub fn set_ring_payload(b: &mut [u8], len: u32) {
    put32(b, URING_ENT + 16, len);
}

/// `struct fuse_uring_cmd_req` in the 80-byte command area of a 128-byte SQE.
pub fn uring_cmd(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[8..16].copy_from_slice(&commit_id.to_le_bytes());
    c[16..18].copy_from_slice(&qid.to_le_bytes());
    c
}

/// `struct fuse_read_in`: (fh, offset, size).
pub fn read_in(b: &[u8]) -> Option<(u64, u64, u32)> {
    Some((u64_at(b, 0)?, u64_at(b, 8)?, u32_at(b, 16)?))
}

/// `struct fuse_open_in`: the open(2) flags.
pub fn open_in(b: &[u8]) -> Option<i32> {
    u32_at(b, 0).map(|f| f as i32)
}

/// `struct fuse_release_in`: the handle.
pub fn release_in(b: &[u8]) -> Option<u64> {
    u64_at(b, 0)
}

/// `struct fuse_attr` (88 bytes) at `b[0..88]`.
fn put_attr(b: &mut [u8], a: &Attr) {
    b[..88].fill(0);
    put64(b, 0, a.ino);
    for at in [24, 32, 40] {
        put64(b, at, a.secs);
    }
    for at in [48, 52, 56] {
        put32(b, at, a.nsecs);
    }
    put32(b, 60, a.mode);
    put32(b, 64, a.nlink);
    put32(b, 80, 4096);
}

/// `struct fuse_entry_out` (128 bytes).
pub fn put_entry_out(b: &mut [u8], a: &Attr, ttl_secs: u64) {
    b[..ENTRY_OUT_LEN].fill(0);
    put64(b, 0, a.ino);
    put64(b, 16, ttl_secs);
    put64(b, 24, ttl_secs);
    put_attr(&mut b[40..], a);
}

/// `struct fuse_attr_out` (104 bytes).
pub fn put_attr_out(b: &mut [u8], a: &Attr, ttl_secs: u64) {
    b[..ATTR_OUT_LEN].fill(0);
    put64(b, 0, ttl_secs);
    put_attr(&mut b[16..], a);
}

/// `struct fuse_open_out` (16 bytes).
pub fn put_open_out(b: &mut [u8], fh: u64, open_flags: u32) {
    b[..OPEN_OUT_LEN].fill(0);
    put64(b, 0, fh);
    put32(b, 8, open_flags);
}

/// `struct fuse_statfs_out` (80 bytes), as procfs answers: no blocks, 255-byte names.
pub fn put_statfs_out(b: &mut [u8]) {
    b[..STATFS_OUT_LEN].fill(0);
    put32(b, 40, 512);
    put32(b, 44, 255);
}

/// Appends one `struct fuse_dirent` (8-byte aligned) if it fits in `room` bytes; returns
/// whether it did.
pub fn push_dirent(
    out: &mut Vec<u8>,
    room: usize,
    ino: u64,
    off: u64,
    dtype: u32,
    name: &[u8],
) -> bool {
    let len = (24 + name.len() + 7) & !7;
    if out.len() + len > room {
        return false;
    }
    let at = out.len();
    out.resize(at + len, 0);
    put64(out, at, ino);
    put64(out, at + 8, off);
    put32(out, at + 16, name.len() as u32);
    put32(out, at + 20, dtype);
    out[at + 24..at + 24 + name.len()].copy_from_slice(name);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_header_fields_sit_where_the_kernel_puts_them() {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&40u32.to_le_bytes());
        b[4..8].copy_from_slice(&READ.to_le_bytes());
        b[8..16].copy_from_slice(&77u64.to_le_bytes());
        b[16..24].copy_from_slice(&19u64.to_le_bytes());
        b[32..36].copy_from_slice(&4242u32.to_le_bytes());
        let h = InHeader::parse(&b).unwrap();
        assert_eq!(
            h,
            InHeader {
                opcode: READ,
                unique: 77,
                nodeid: 19,
                pid: 4242
            }
        );
        assert_eq!(InHeader::parse(&b[..30]), None, "short header is refused");
    }

    #[test]
    fn replies_have_the_kernels_sizes_and_offsets() {
        let a = Attr {
            ino: 19,
            mode: libc::S_IFREG | 0o444,
            nlink: 1,
            secs: 1_700_000_000,
            nsecs: 5,
        };
        let mut e = [0xffu8; ENTRY_OUT_LEN];
        put_entry_out(&mut e, &a, 10);
        assert_eq!(u64_at(&e, 0), Some(19), "nodeid");
        assert_eq!(u64_at(&e, 16), Some(10), "entry_valid");
        assert_eq!(u64_at(&e, 40), Some(19), "attr.ino");
        assert_eq!(
            u32_at(&e, 40 + 60),
            Some(libc::S_IFREG | 0o444),
            "attr.mode"
        );
        assert_eq!(u32_at(&e, 40 + 52), Some(5), "attr.mtimensec");
        let mut o = [0u8; ATTR_OUT_LEN];
        put_attr_out(&mut o, &a, 10);
        assert_eq!(u64_at(&o, 16), Some(19));
        let mut op = [0u8; OPEN_OUT_LEN];
        put_open_out(&mut op, 9, FOPEN_DIRECT_IO);
        assert_eq!((u64_at(&op, 0), u32_at(&op, 8)), (Some(9), Some(1)));
        let mut h = [0u8; 16];
        put_out_header(&mut h, 16, -libc::ENOENT, 77);
        assert_eq!(u32_at(&h, 4).map(|v| v as i32), Some(-libc::ENOENT));
    }

    #[test]
    fn dirents_are_aligned_and_stop_when_full() {
        let mut out = Vec::new();
        assert!(push_dirent(&mut out, 60, 2, 1, 4, b"proc"));
        assert_eq!(out.len(), 32, "24 + 4 rounded to 8");
        assert!(
            !push_dirent(&mut out, 60, 3, 2, 4, b"devices"),
            "32 more do not fit in 60"
        );
        assert_eq!(out.len(), 32);
        assert_eq!(u32_at(&out, 16), Some(4));
        assert_eq!(&out[24..28], b"proc");
    }

    #[test]
    fn ring_entry_and_command_layout() {
        let mut hdr = vec![0u8; URING_HEADER_LEN];
        hdr[URING_ENT + 8..URING_ENT + 16].copy_from_slice(&55u64.to_le_bytes());
        hdr[URING_ENT + 16..URING_ENT + 20].copy_from_slice(&12u32.to_le_bytes());
        assert_eq!(ring_ent(&hdr), Some((55, 12)));
        set_ring_payload(&mut hdr, 99);
        assert_eq!(ring_ent(&hdr), Some((55, 99)));
        let c = uring_cmd(55, 1);
        assert_eq!(u64_at(&c, 8), Some(55));
        assert_eq!(u16_at(&c, 16), Some(1));
    }
}
