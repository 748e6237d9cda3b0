//! The fuser filesystem: a static tree (plus per-caller cpuN directories), files generated per
//! read at offset 0 and served from a per-handle snapshot at offset > 0.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, Request,
};

use crate::engine::Engine;
use crate::metrics::File;

const ROOT: u64 = 1;
const PROC: u64 = 2;
const PRESSURE: u64 = 3;
const SYS: u64 = 4;
const DEVICES: u64 = 5;
const SYSTEM: u64 = 6;
const CPU: u64 = 7;
const FILE_BASE: u64 = 16;
const CPU_DIR_BASE: u64 = 4096;
/// cpuN directories exist up to this many (the kernel's NR_CPUS is far above any host here).
const MAX_CPUS: u64 = 8192;

/// Static parts never change; per-caller ones (the cpuN entries) must not be cached, because
/// the kernel's dentry cache is shared by every caller.
const TTL_STATIC: Duration = Duration::from_secs(10);
const TTL_NONE: Duration = Duration::ZERO;

fn file_ino(f: File) -> u64 {
    FILE_BASE + File::ALL.iter().position(|&x| x == f).unwrap_or(0) as u64
}

fn ino_file(ino: u64) -> Option<File> {
    ino.checked_sub(FILE_BASE)
        .and_then(|i| File::ALL.get(i as usize).copied())
        .filter(|_| ino < CPU_DIR_BASE)
}

/// Static directory entries: (parent, name, inode, kind).
fn static_entries() -> &'static [(u64, &'static str, u64, FileType)] {
    use FileType::{Directory as D, RegularFile as F};
    static E: std::sync::OnceLock<Vec<(u64, &'static str, u64, FileType)>> =
        std::sync::OnceLock::new();
    E.get_or_init(|| {
        vec![
            (ROOT, "proc", PROC, D),
            (ROOT, "sys", SYS, D),
            (PROC, "meminfo", file_ino(File::Meminfo), F),
            (PROC, "cpuinfo", file_ino(File::Cpuinfo), F),
            (PROC, "stat", file_ino(File::Stat), F),
            (PROC, "uptime", file_ino(File::Uptime), F),
            (PROC, "loadavg", file_ino(File::Loadavg), F),
            (PROC, "diskstats", file_ino(File::Diskstats), F),
            (PROC, "swaps", file_ino(File::Swaps), F),
            (PROC, "pressure", PRESSURE, D),
            (PRESSURE, "cpu", file_ino(File::PressureCpu), F),
            (PRESSURE, "memory", file_ino(File::PressureMemory), F),
            (PRESSURE, "io", file_ino(File::PressureIo), F),
            (SYS, "devices", DEVICES, D),
            (DEVICES, "system", SYSTEM, D),
            (SYSTEM, "cpu", CPU, D),
            (CPU, "online", file_ino(File::CpuOnline), F),
            (CPU, "present", file_ino(File::CpuPresent), F),
            (CPU, "possible", file_ino(File::CpuPossible), F),
        ]
    })
}

fn parent_of(ino: u64) -> u64 {
    if (CPU_DIR_BASE..CPU_DIR_BASE + MAX_CPUS).contains(&ino) {
        return CPU;
    }
    static_entries()
        .iter()
        .find(|e| e.2 == ino)
        .map_or(ROOT, |e| e.0)
}

fn is_dir(ino: u64) -> bool {
    matches!(ino, ROOT | PROC | PRESSURE | SYS | DEVICES | SYSTEM | CPU)
        || (CPU_DIR_BASE..CPU_DIR_BASE + MAX_CPUS).contains(&ino)
}

fn exists(ino: u64) -> bool {
    is_dir(ino) || ino_file(ino).is_some()
}

const SHARDS: usize = 16;

pub struct CgFs {
    engine: Arc<Engine>,
    next_fh: AtomicU64,
    /// Per-open snapshots for reads at offset > 0, sharded to keep threads off one lock.
    snaps: Vec<Mutex<HashMap<u64, Arc<Vec<u8>>>>>,
    born: SystemTime,
}

impl CgFs {
    pub fn new(engine: Arc<Engine>) -> CgFs {
        CgFs {
            engine,
            next_fh: AtomicU64::new(1),
            snaps: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            born: SystemTime::now(),
        }
    }

    fn shard(&self, fh: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Vec<u8>>>> {
        self.snaps[(fh as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let dir = is_dir(ino);
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.born,
            mtime: self.born,
            ctime: self.born,
            crtime: self.born,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o555 } else { 0o444 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn cpu_index(name: &str) -> Option<u64> {
        let n = name.strip_prefix("cpu")?;
        if n.is_empty()
            || !n.bytes().all(|b| b.is_ascii_digit())
            || (n.len() > 1 && n.starts_with('0'))
        {
            return None;
        }
        n.parse().ok().filter(|&n| n < MAX_CPUS)
    }
}

impl Filesystem for CgFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(e) = static_entries()
            .iter()
            .find(|e| e.0 == parent.0 && e.1 == name)
        {
            return reply.entry(&TTL_STATIC, &self.attr(e.2), Generation(0));
        }
        if parent.0 == CPU {
            if let Some(n) = Self::cpu_index(name) {
                if (n as usize) < self.engine.cpu_dirs(req.pid()) {
                    let ino = CPU_DIR_BASE + n;
                    return reply.entry(&TTL_NONE, &self.attr(ino), Generation(0));
                }
            }
        }
        reply.error(Errno::ENOENT)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if exists(ino.0) {
            reply.attr(&TTL_STATIC, &self.attr(ino.0))
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino_file(ino.0).is_none() {
            return reply.error(Errno::EISDIR);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EACCES);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        // Direct I/O: every read reaches us (no page cache), and st_size 0 is not trusted.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
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
        let Some(f) = ino_file(ino.0) else {
            return reply.error(Errno::EISDIR);
        };
        // Offset 0 regenerates (top keeps the fd and lseek(0)s every frame); later offsets
        // continue the snapshot taken then, so chunked reads see one consistent file.
        let snap = if offset == 0 {
            None
        } else {
            self.shard(fh.0).get(&fh.0).cloned()
        };
        let data = match snap {
            Some(d) => d,
            None => {
                let d = Arc::new(self.engine.generate(f, req.pid()));
                self.shard(fh.0).insert(fh.0, d.clone());
                d
            }
        };
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        reply.data(&data[start..end])
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
        reply.error(Errno::ENOSYS)
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
        reply.error(Errno::ENOTTY)
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
        self.shard(fh.0).remove(&fh.0);
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
        if !is_dir(ino.0) {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (parent_of(ino.0), FileType::Directory, "..".into()),
        ];
        for e in static_entries().iter().filter(|e| e.0 == ino.0) {
            entries.push((e.2, e.3, e.1.to_owned()));
        }
        if ino.0 == CPU {
            let n = self.engine.cpu_dirs(req.pid()) as u64;
            for i in 0..n.min(MAX_CPUS) {
                entries.push((CPU_DIR_BASE + i, FileType::Directory, format!("cpu{i}")));
            }
        }
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
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
    fn tree_is_consistent() {
        for e in static_entries() {
            assert!(is_dir(e.0), "{} has a non-dir parent", e.1);
            assert_eq!(parent_of(e.2), e.0);
            assert!(exists(e.2));
        }
        for f in File::ALL {
            assert_eq!(ino_file(file_ino(f)), Some(f));
        }
        assert_eq!(ino_file(CPU_DIR_BASE), None);
        assert_eq!(CgFs::cpu_index("cpu0"), Some(0));
        assert_eq!(CgFs::cpu_index("cpu17"), Some(17));
        assert_eq!(CgFs::cpu_index("cpu01"), None);
        assert_eq!(CgFs::cpu_index("cpufreq"), None);
        assert_eq!(CgFs::cpu_index("cpu"), None);
    }
}
