//! The transport-neutral tree: inodes of a static layout (plus per-caller cpuN directories),
//! attributes, errnos, and files generated per read at offset 0 and served from a per-handle
//! snapshot at offset > 0. Both transports (`devfuse`, `uring`) answer from it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::catalogue::File;
use crate::engine::Engine;
use crate::views::topology::{Leaf, CACHE_FILES, MAX_CACHES, TOPOLOGY_FILES};

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

/// Nodes under cpuN/: `CPU_NODE_BASE + N × CPU_NODE_STRIDE + local` (see [`Sub`]).
const CPU_NODE_BASE: u64 = 1 << 24;
const CPU_NODE_STRIDE: u64 = 1024;
const LOCAL_TOPOLOGY_DIR: u64 = 0;
const LOCAL_CACHE_DIR: u64 = 1;
const LOCAL_ONLINE: u64 = 2;
const LOCAL_TOPOLOGY_FILES: u64 = 16;
const LOCAL_INDEX_DIRS: u64 = 64;
const LOCAL_INDEX_STRIDE: u64 = 32;

/// A node under cpuN/.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    TopologyDir,
    CacheDir,
    IndexDir(usize),
    Leaf(Leaf),
}

fn sub_local(s: Sub) -> u64 {
    match s {
        Sub::TopologyDir => LOCAL_TOPOLOGY_DIR,
        Sub::CacheDir => LOCAL_CACHE_DIR,
        Sub::IndexDir(k) => LOCAL_INDEX_DIRS + k as u64 * LOCAL_INDEX_STRIDE,
        Sub::Leaf(Leaf::Online) => LOCAL_ONLINE,
        Sub::Leaf(Leaf::Topology(t)) => LOCAL_TOPOLOGY_FILES + t as u64,
        Sub::Leaf(Leaf::Cache(k, j)) => {
            LOCAL_INDEX_DIRS + k as u64 * LOCAL_INDEX_STRIDE + 1 + j as u64
        }
    }
}

fn sub_ino(cpu: u64, s: Sub) -> u64 {
    CPU_NODE_BASE + cpu * CPU_NODE_STRIDE + sub_local(s)
}

/// The CPU and node of an inode under cpuN/.
fn ino_sub(ino: u64) -> Option<(u64, Sub)> {
    let rel = ino.checked_sub(CPU_NODE_BASE)?;
    let (cpu, local) = (rel / CPU_NODE_STRIDE, rel % CPU_NODE_STRIDE);
    if cpu >= MAX_CPUS {
        return None;
    }
    let sub = match local {
        LOCAL_TOPOLOGY_DIR => Sub::TopologyDir,
        LOCAL_CACHE_DIR => Sub::CacheDir,
        LOCAL_ONLINE => Sub::Leaf(Leaf::Online),
        l if (LOCAL_TOPOLOGY_FILES..LOCAL_TOPOLOGY_FILES + TOPOLOGY_FILES.len() as u64)
            .contains(&l) =>
        {
            Sub::Leaf(Leaf::Topology((l - LOCAL_TOPOLOGY_FILES) as usize))
        }
        l if l >= LOCAL_INDEX_DIRS => {
            let k = ((l - LOCAL_INDEX_DIRS) / LOCAL_INDEX_STRIDE) as usize;
            let j = (l - LOCAL_INDEX_DIRS) % LOCAL_INDEX_STRIDE;
            if k >= MAX_CACHES {
                return None;
            }
            match j {
                0 => Sub::IndexDir(k),
                j if j <= CACHE_FILES.len() as u64 => Sub::Leaf(Leaf::Cache(k, j as usize - 1)),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some((cpu, sub))
}

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
    if let Some((cpu, sub)) = ino_sub(ino) {
        return match sub {
            Sub::TopologyDir | Sub::CacheDir | Sub::Leaf(Leaf::Online) => CPU_DIR_BASE + cpu,
            Sub::Leaf(Leaf::Topology(_)) => sub_ino(cpu, Sub::TopologyDir),
            Sub::IndexDir(_) => sub_ino(cpu, Sub::CacheDir),
            Sub::Leaf(Leaf::Cache(k, _)) => sub_ino(cpu, Sub::IndexDir(k)),
        };
    }
    static_entries()
        .iter()
        .find(|e| e.2 == ino)
        .map_or(ROOT, |e| e.0)
}

fn is_dir(ino: u64) -> bool {
    matches!(ino, ROOT | PROC | PRESSURE | SYS | DEVICES | SYSTEM | CPU)
        || (CPU_DIR_BASE..CPU_DIR_BASE + MAX_CPUS).contains(&ino)
        || matches!(ino_sub(ino), Some((_, s)) if !matches!(s, Sub::Leaf(_)))
}

fn exists(ino: u64) -> bool {
    is_dir(ino) || ino_file(ino).is_some() || ino_sub(ino).is_some()
}

/// The leaf of a file under cpuN/.
fn ino_leaf(ino: u64) -> Option<(usize, Leaf)> {
    match ino_sub(ino)? {
        (cpu, Sub::Leaf(l)) => Some((cpu as usize, l)),
        _ => None,
    }
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
        if let Some(ino) = self
            .cpu_children(parent, pid)
            .into_iter()
            .find(|e| e.2 == name)
            .map(|e| e.0)
        {
            return Ok((ino, TTL_NONE));
        }
        Err(libc::ENOENT)
    }

    /// The caller's entries of a directory at or under cpuN/ (empty for other directories).
    fn cpu_children(&self, dir: u64, pid: u32) -> Vec<DirEntry> {
        let (cpu, sub) = if (CPU_DIR_BASE..CPU_DIR_BASE + MAX_CPUS).contains(&dir) {
            (dir - CPU_DIR_BASE, None)
        } else {
            match ino_sub(dir) {
                Some((c, s)) if !matches!(s, Sub::Leaf(_)) => (c, Some(s)),
                _ => return Vec::new(),
            }
        };
        if cpu as usize >= self.engine.cpu_dirs(pid) {
            return Vec::new();
        }
        let node =
            |s: Sub, name: String| (sub_ino(cpu, s), !matches!(s, Sub::Leaf(_)), name.into());
        match sub {
            None => vec![
                node(Sub::Leaf(Leaf::Online), "online".to_owned()),
                node(Sub::TopologyDir, "topology".to_owned()),
                node(Sub::CacheDir, "cache".to_owned()),
            ],
            Some(Sub::TopologyDir) => TOPOLOGY_FILES
                .iter()
                .enumerate()
                .map(|(t, n)| node(Sub::Leaf(Leaf::Topology(t)), (*n).to_owned()))
                .collect(),
            Some(Sub::CacheDir) => (0..self.engine.cpu_caches(pid, cpu as usize).min(MAX_CACHES))
                .map(|k| node(Sub::IndexDir(k), format!("index{k}")))
                .collect(),
            Some(Sub::IndexDir(k)) => CACHE_FILES
                .iter()
                .enumerate()
                .filter(|(j, _)| {
                    self.engine
                        .cpu_leaf(pid, cpu as usize, Leaf::Cache(k, *j))
                        .is_some()
                })
                .map(|(j, n)| node(Sub::Leaf(Leaf::Cache(k, j)), (*n).to_owned()))
                .collect(),
            Some(Sub::Leaf(_)) => Vec::new(),
        }
    }

    /// A new handle for a read-only open of a file.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        if ino_file(ino).is_none() && ino_leaf(ino).is_none() {
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
        let file = ino_file(ino);
        let leaf = ino_leaf(ino);
        if file.is_none() && leaf.is_none() {
            return Err(libc::EISDIR);
        }
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
                let bytes = match (file, leaf) {
                    (Some(f), _) => self.engine.generate(f, pid),
                    (None, Some((cpu, l))) => self
                        .engine
                        .cpu_leaf(pid, cpu, l)
                        .ok_or(libc::ENOENT)?
                        .into_bytes(),
                    (None, None) => return Err(libc::EISDIR),
                };
                let d = Arc::new(bytes);
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
        entries.extend(self.cpu_children(ino, pid));
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

    #[test]
    fn cpu_nodes_round_trip_and_hang_under_their_parents() {
        let mut subs = vec![Sub::TopologyDir, Sub::CacheDir, Sub::Leaf(Leaf::Online)];
        subs.extend((0..TOPOLOGY_FILES.len()).map(|t| Sub::Leaf(Leaf::Topology(t))));
        for k in 0..MAX_CACHES {
            subs.push(Sub::IndexDir(k));
            subs.extend((0..CACHE_FILES.len()).map(|j| Sub::Leaf(Leaf::Cache(k, j))));
        }
        for cpu in [0, 1, MAX_CPUS - 1] {
            for &s in &subs {
                let ino = sub_ino(cpu, s);
                assert_eq!(ino_sub(ino), Some((cpu, s)));
                assert!(exists(ino));
                assert_eq!(is_dir(ino), !matches!(s, Sub::Leaf(_)));
                assert_eq!(ino_file(ino), None);
                let p = parent_of(ino);
                assert!(is_dir(p), "{s:?}");
                assert!(p == CPU_DIR_BASE + cpu || ino_sub(p).map(|x| x.0) == Some(cpu));
            }
        }
        assert!(
            sub_ino(
                MAX_CPUS - 1,
                Sub::Leaf(Leaf::Cache(MAX_CACHES - 1, CACHE_FILES.len() - 1))
            ) < CPU_NODE_BASE + MAX_CPUS * CPU_NODE_STRIDE
        );
        assert_eq!(ino_sub(CPU_NODE_BASE + 3), None);
        assert_eq!(ino_sub(CPU_NODE_BASE + MAX_CPUS * CPU_NODE_STRIDE), None);
    }
}
