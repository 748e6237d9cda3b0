//! One FUSE request → its reply, for both transports (/dev/fuse and io_uring): decodes the
//! per-operation input, asks the [`Tree`], and encodes the reply payload.

use crate::abi;
use crate::tree::{Errno, Tree};

/// Longest file name a LOOKUP may carry (as NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Runs one request. `op_in` is the operation's fixed input struct, `name` the LOOKUP name
/// (NUL-terminated or not), `out` receives the reply payload; returns its length or an errno.
pub fn dispatch(
    tree: &Tree,
    h: &abi::InHeader,
    op_in: &[u8],
    name: &[u8],
    out: &mut [u8],
) -> Result<usize, Errno> {
    let bad = libc::EIO;
    match h.opcode {
        abi::LOOKUP => {
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            if name.len() > NAME_MAX {
                return Err(libc::ENAMETOOLONG);
            }
            let (ino, ttl) = tree.lookup(h.nodeid, name, h.pid)?;
            abi::put_entry_out(out, &tree.attr(ino)?, ttl.as_secs());
            Ok(abi::ENTRY_OUT_LEN)
        }
        abi::GETATTR => {
            let (a, ttl) = tree.getattr(h.nodeid)?;
            abi::put_attr_out(out, &a, ttl.as_secs());
            Ok(abi::ATTR_OUT_LEN)
        }
        abi::OPEN => {
            let fh = tree.open(h.nodeid, abi::open_in(op_in).ok_or(bad)?)?;
            abi::put_open_out(out, fh, abi::FOPEN_DIRECT_IO);
            Ok(abi::OPEN_OUT_LEN)
        }
        abi::READ => {
            let (fh, offset, size) = abi::read_in(op_in).ok_or(bad)?;
            let (data, r) = tree.read(h.nodeid, fh, offset, size, h.pid)?;
            let n = r.len().min(out.len());
            let src = data.get(r.start..r.start + n).ok_or(bad)?;
            out[..n].copy_from_slice(src);
            Ok(n)
        }
        abi::RELEASE => {
            tree.release(abi::release_in(op_in).ok_or(bad)?);
            Ok(0)
        }
        abi::OPENDIR => {
            if !Tree::is_dir(h.nodeid) {
                return Err(libc::ENOTDIR);
            }
            abi::put_open_out(out, 0, 0);
            Ok(abi::OPEN_OUT_LEN)
        }
        abi::READDIR => {
            let (_, offset, size) = abi::read_in(op_in).ok_or(bad)?;
            let entries = tree.dir_entries(h.nodeid, h.pid)?;
            let room = (size as usize).min(out.len());
            let mut buf = Vec::with_capacity(room.min(4096));
            let skip = usize::try_from(offset).unwrap_or(usize::MAX);
            for (i, (ino, dir, name)) in entries.iter().enumerate().skip(skip) {
                let dtype = if *dir { libc::DT_DIR } else { libc::DT_REG } as u32;
                if !abi::push_dirent(&mut buf, room, *ino, (i + 1) as u64, dtype, name.as_bytes()) {
                    break;
                }
            }
            out[..buf.len()].copy_from_slice(&buf);
            Ok(buf.len())
        }
        abi::RELEASEDIR | abi::DESTROY => Ok(0),
        abi::STATFS => {
            abi::put_statfs_out(out);
            Ok(abi::STATFS_OUT_LEN)
        }
        // Like procfs, not a terminal (Python's open() asks isatty()).
        abi::IOCTL => Err(libc::ENOTTY),
        // FLUSH, xattrs, access, lseek, …: ENOSYS once and the kernel stops asking.
        _ => Err(libc::ENOSYS),
    }
}
