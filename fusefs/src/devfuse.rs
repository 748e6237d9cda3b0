//! The /dev/fuse transport (fuser): answers from the [`Tree`], and at INIT decides whether
//! the kernel also switches to the io_uring queues.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, Request,
};

use crate::tree::{Attr, Errno, Tree};

/// The fuser side: the /dev/fuse transport, and the INIT that may switch to io_uring.
pub struct CgFs {
    tree: Arc<Tree>,
    uring: Option<crate::uring::Pending>,
}

impl CgFs {
    pub fn new(tree: Arc<Tree>, uring: Option<crate::uring::Pending>) -> CgFs {
        CgFs { tree, uring }
    }
}

/// fuser's form of [`Tree::attr`].
fn file_attr(a: &Attr) -> FileAttr {
    let t = std::time::UNIX_EPOCH + Duration::new(a.secs, a.nsecs);
    FileAttr {
        ino: INodeNo(a.ino),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: if a.mode & libc::S_IFMT == libc::S_IFDIR {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e)
}

impl Filesystem for CgFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Reads never need more than this per request (the biggest view is a few pages per
        // CPU); it also sizes each io_uring payload buffer, which the kernel wants as large as
        // max(max_write, max_pages pages).
        let _ = config.set_max_write(crate::uring::PAYLOAD as u32);
        let _ = config.set_max_readahead(crate::uring::PAYLOAD as u32);
        if let Some(p) = self.uring.take() {
            if config
                .capabilities()
                .contains(InitFlags::FUSE_OVER_IO_URING)
                && config
                    .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                    .is_ok()
            {
                p.start();
            } else {
                p.decline("the kernel did not offer FUSE over io_uring");
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        use std::os::unix::ffi::OsStrExt;
        match self
            .tree
            .lookup(parent.0, name.as_bytes(), req.pid())
            .and_then(|(ino, ttl)| Ok((self.tree.attr(ino)?, ttl)))
        {
            Ok((a, ttl)) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.getattr(ino.0) {
            Ok((a, ttl)) => reply.attr(&ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.open(ino.0, flags.0) {
            // Direct I/O: every read reaches us (no page cache), and st_size 0 is not trusted.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.tree.read(ino.0, fh.0, offset, size, req.pid()) {
            Ok((data, range)) => reply.data(&data[range]),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // ENOSYS once: the kernel then stops sending FLUSH on every close.
        reply.error(fuser::Errno::ENOSYS)
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // Python's open() asks isatty(); like procfs, these are not terminals.
        reply.error(fuser::Errno::ENOTTY)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.tree.release(fh.0);
        reply.ok()
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.tree.dir_entries(ino.0, req.pid()) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, (ino, dir, name)) in entries.iter().enumerate().skip(offset as usize) {
            let kind = if *dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(*ino), (i + 1) as u64, kind, name.as_ref()) {
                break;
            }
        }
        reply.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuser_attrs_match_the_wire_attrs() {
        let dir = Attr {
            ino: crate::tree::PROC,
            mode: libc::S_IFDIR | 0o555,
            nlink: 2,
            secs: 1_700_000_000,
            nsecs: 7,
        };
        let f = file_attr(&dir);
        assert_eq!(
            (f.kind, f.perm, f.nlink, f.ino),
            (FileType::Directory, 0o555, 2, INodeNo(crate::tree::PROC))
        );
        assert_eq!(
            f.mtime.duration_since(std::time::UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_000, 7)
        );
        let file = file_attr(&Attr {
            mode: libc::S_IFREG | 0o444,
            nlink: 1,
            ..dir
        });
        assert_eq!((file.kind, file.perm), (FileType::RegularFile, 0o444));
    }
}
