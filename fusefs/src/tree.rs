//! The transport-neutral tree: inodes of a static layout (plus per-caller cpuN directories),
//! attributes, errnos, and files generated per read at offset 0 and served from a per-handle
//! snapshot at offset > 0. Both transports (`devfuse`, `uring`) answer from it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::catalogue::File;
use crate::engine::Engine;

const ROOT: u64 = 1;
pub(crate) const PROC: u64 = 2;
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

const D: bool = true;
const F: bool = false;

/// Static directory entries: (parent, name, inode, is a directory).
fn static_entries() -> &'static [(u64, &'static str, u64, bool)] {
    static E: std::sync::OnceLock<Vec<(u64, &'static str, u64, bool)>> = std::sync::OnceLock::new();
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
            (PROC, "vmstat", file_ino(File::Vmstat), F),
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

/// What `struct fuse_attr` needs from a node (each transport encodes it its own way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    /// Full st_mode, type bits included.
    pub mode: u32,
    pub nlink: u32,
    pub secs: u64,
    pub nsecs: u32,
}

/// Negative errno values are the transports' business; the tree answers with plain errnos.
pub type Errno = i32;

/// One directory entry: inode, is it a directory, name.
pub type DirEntry = (u64, bool, std::borrow::Cow<'static, str>);

/// The tree and its per-open snapshots, shared by both transports (fuser over /dev/fuse, and
/// the io_uring queues), so file handles are unique across them.
pub struct Tree {
    engine: Arc<Engine>,
    next_fh: AtomicU64,
    /// Per-open snapshots for reads at offset > 0, sharded to keep threads off one lock.
    snaps: Vec<Mutex<HashMap<u64, Arc<Vec<u8>>>>>,
    born: SystemTime,
}

impl Tree {
    pub fn new(engine: Arc<Engine>) -> Tree {
        Tree {
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

    pub fn is_dir(ino: u64) -> bool {
        is_dir(ino)
    }

    /// What stat(2) shows of a node (both transports encode this), or ENOENT.
    pub fn attr(&self, ino: u64) -> Result<Attr, Errno> {
        if !exists(ino) {
            return Err(libc::ENOENT);
        }
        let dir = is_dir(ino);
        let born = self
            .born
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Attr {
            ino,
            mode: if dir {
                libc::S_IFDIR | 0o555
            } else {
                libc::S_IFREG | 0o444
            },
            nlink: if dir { 2 } else { 1 },
            secs: born.as_secs(),
            nsecs: born.subsec_nanos(),
        })
    }

    /// The attributes and how long the kernel may cache them.
    pub fn getattr(&self, ino: u64) -> Result<(Attr, Duration), Errno> {
        self.attr(ino).map(|a| (a, TTL_STATIC))
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

    /// The inode of `name` in `parent` and how long the kernel may cache the answer.
    pub fn lookup(&self, parent: u64, name: &[u8], pid: u32) -> Result<(u64, Duration), Errno> {
        let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
        if let Some(e) = static_entries()
            .iter()
            .find(|e| e.0 == parent && e.1 == name)
        {
            return Ok((e.2, TTL_STATIC));
        }
        if parent == CPU {
            if let Some(n) = Self::cpu_index(name) {
                if (n as usize) < self.engine.cpu_dirs(pid) {
                    return Ok((CPU_DIR_BASE + n, TTL_NONE));
                }
            }
        }
        Err(libc::ENOENT)
    }

    /// A new handle for a read-only open of a file.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        if ino_file(ino).is_none() {
            return Err(libc::EISDIR);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(libc::EACCES);
        }
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// The bytes a read at `offset` returns: the whole snapshot and the range of it.
    pub fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        pid: u32,
    ) -> Result<(Arc<Vec<u8>>, std::ops::Range<usize>), Errno> {
        let f = ino_file(ino).ok_or(libc::EISDIR)?;
        // Offset 0 regenerates (top keeps the fd and lseek(0)s every frame); later offsets
        // continue the snapshot taken then, so chunked reads see one consistent file.
        let snap = if offset == 0 {
            None
        } else {
            self.shard(fh).get(&fh).cloned()
        };
        let data = match snap {
            Some(d) => d,
            None => {
                let d = Arc::new(self.engine.generate(f, pid));
                self.shard(fh).insert(fh, d.clone());
                d
            }
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        Ok((data, start..end))
    }

    pub fn release(&self, fh: u64) {
        self.shard(fh).remove(&fh);
    }

    /// The listing of a directory as the caller sees it (cpuN entries are per caller).
    pub fn dir_entries(&self, ino: u64, pid: u32) -> Result<Vec<DirEntry>, Errno> {
        if !is_dir(ino) {
            return Err(libc::ENOTDIR);
        }
        let mut entries: Vec<DirEntry> =
            vec![(ino, true, ".".into()), (parent_of(ino), true, "..".into())];
        for e in static_entries().iter().filter(|e| e.0 == ino) {
            entries.push((e.2, e.3, e.1.into()));
        }
        if ino == CPU {
            let n = self.engine.cpu_dirs(pid) as u64;
            for i in 0..n.min(MAX_CPUS) {
                entries.push((CPU_DIR_BASE + i, true, format!("cpu{i}").into()));
            }
        }
        Ok(entries)
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
        assert_eq!(Tree::cpu_index("cpu0"), Some(0));
        assert_eq!(Tree::cpu_index("cpu17"), Some(17));
        assert_eq!(Tree::cpu_index("cpu01"), None);
        assert_eq!(Tree::cpu_index("cpufreq"), None);
        assert_eq!(Tree::cpu_index("cpu"), None);
    }
}
