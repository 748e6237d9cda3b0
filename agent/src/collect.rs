//! One scrape: discover cgroups (keeping what is known about each across scrapes: its labels,
//! its kept-open files, its last readings), read them through [`crate::read`], hand the rows to
//! [`crate::families`]. A cgroup that vanishes mid-scrape is skipped silently; a bad file costs
//! that family's series for that cgroup and is counted by [`crate::errors`].

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cgsight_cgroup::memory::{MemCounters, StatLines};
use cgsight_cgroup::{Cgroup, Controller, ControllerDir, Hierarchies, Version};

use crate::discover::{self, Kind};
use crate::errors::Errors;
pub use crate::errors::ERROR_KINDS;
use crate::exposition::label_prefix;
use crate::families::{self, Agent, RootFs, Row, Scrape, Stats};
use crate::files::{CgFiles, Reader};
use crate::host::{self, Host};
use crate::labels::Labeler;
use crate::netdev::{self, Iface};
use crate::process;
use crate::read::{slot, Files};

/// The scrape's deadline passed before it was done; its partial output is to be discarded.
#[derive(Debug, thiserror::Error)]
#[error("the scrape deadline passed")]
pub struct DeadlinePassed;

/// What is known about one cgroup across scrapes.
struct Entry {
    cgroup: Cgroup,
    kind: Kind,
    /// Its directory's inode, as discovery saw it.
    ino: Option<u64>,
    /// `id="…",name="…",image="…"` escaped.
    prefix: String,
    start: f64,
    runtime: &'static str,
    /// Its accounting files, kept open.
    files: CgFiles,
    /// The last readings; refilled in place each scrape.
    stats: Stats,
    /// `stats` were read in this scrape.
    fresh: bool,
    /// The first process and its network namespace inode, as of the last lookup.
    netns: Option<(i32, Option<u64>)>,
}

pub struct Collector {
    h: Hierarchies,
    all: bool,
    labeler: Labeler,
    /// Known cgroups, sorted by path (discovery's order).
    /// Boxed: the merge moves each entry every scrape, and an Entry is ~1 KiB.
    entries: Vec<(String, Box<Entry>)>,
    devnames: HashMap<(u32, u32), String>,
    errs: Errors,
    reader: Reader,
    /// memory.stat's layout, shared by all cgroups (the kernel prints the same keys).
    stat_lines: StatLines,
    host: Host,
    version: &'static str,
}

impl Collector {
    pub fn new(h: Hierarchies, all: bool, state_dir: PathBuf) -> Self {
        Self::with_reader(h, all, state_dir, Reader::new())
    }

    /// As [`Self::new`] with a given file reader (tests bound its descriptor budget).
    pub fn with_reader(h: Hierarchies, all: bool, state_dir: PathBuf, reader: Reader) -> Self {
        Collector {
            h,
            all,
            labeler: Labeler::new(state_dir),
            entries: Vec::new(),
            devnames: HashMap::new(),
            errs: Errors::new(),
            reader,
            stat_lines: StatLines::default(),
            host: Host::probe(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Accounting-file descriptors kept open now.
    pub fn kept_files(&self) -> usize {
        self.reader.kept()
    }

    /// Collects everything and appends the exposition to `out`.
    pub fn scrape(&mut self, out: &mut String) {
        // Without a deadline the scrape always finishes.
        let _ = self.scrape_until(out, None);
    }

    /// As [`Self::scrape`], but stops reading cgroups once `deadline` passes and returns
    /// [`DeadlinePassed`], leaving `out` partial.
    pub fn scrape_until(
        &mut self,
        out: &mut String,
        deadline: Option<Instant>,
    ) -> Result<(), DeadlinePassed> {
        let t0 = Instant::now();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let found = match discover::discover(&self.h, self.all) {
            Ok(f) => f,
            Err(e) => {
                self.errs.error("discovery", "/", &e);
                vec![discover::Found {
                    path: "/".into(),
                    kind: Kind::Root,
                    ino: None,
                }]
            }
        };
        let mut found = found;
        // Discovery lists paths sorted (the root, a prefix of all, first); the merge below
        // relies on it.
        if !found.is_sorted_by(|a, b| a.path <= b.path) {
            found.sort_by(|a, b| a.path.cmp(&b.path));
        }
        // Merge the sorted old entries with the sorted new list: one comparison per cgroup,
        // no hashing. Dropping an entry closes its kept files.
        let mut old = std::mem::take(&mut self.entries).into_iter().peekable();
        let mut entries = Vec::with_capacity(found.len());
        for f in found {
            while old.next_if(|(p, _)| *p < f.path).is_some() {}
            // Removed and made again since the last scrape: a new cgroup (its start, labels,
            // and the files and watches of the old directory are stale).
            let kept = old.next_if(|(p, e)| *p == f.path && !(f.ino.is_some() && e.ino != f.ino));
            let entry = match kept {
                Some((_, e)) => e,
                None => match self.new_entry(&f.path, f.kind, f.ino) {
                    Some(e) => Box::new(e),
                    None => continue,
                },
            };
            entries.push((f.path, entry));
        }
        drop(old);
        self.entries = entries;
        let live: HashSet<&str> = self
            .entries
            .iter()
            .filter_map(|(_, e)| e.kind.id())
            .collect();
        self.labeler.retain(&live);

        self.reader.next_scrape();
        let mut netns_cache: HashMap<u64, Option<Arc<Vec<Iface>>>> = HashMap::new();
        let mut cpusets: HashMap<Vec<u8>, Option<usize>> = HashMap::new();
        let mut per_read = 0u64;
        for (path, e) in &mut self.entries {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(DeadlinePassed);
            }
            e.files.per_read = false;
            let mut cx = Cx {
                reader: &mut self.reader,
                errs: &mut self.errs,
                host: &self.host,
                netns_cache: &mut netns_cache,
                cpusets: &mut cpusets,
                stat_lines: &mut self.stat_lines,
            };
            e.fresh = cx.read_stats(path, e);
            per_read += u64::from(e.files.per_read);
        }

        let rows: Vec<(&str, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.fresh)
            .map(|(p, e)| (p.as_str(), &**e))
            .collect();
        let kube = rows.iter().any(|(_, e)| e.kind.pod_uid().is_some());
        let prefixes: Vec<std::borrow::Cow<str>> = rows
            .iter()
            .map(|(_, e)| match e.kind.pod_uid() {
                _ if !kube => std::borrow::Cow::Borrowed(e.prefix.as_str()),
                pod => std::borrow::Cow::Owned(format!(
                    "{},{}",
                    e.prefix,
                    label_prefix(&[
                        ("pod", pod.unwrap_or("")),
                        ("namespace", ""),
                        ("container", "")
                    ])
                )),
            })
            .collect();
        let mut devices: HashMap<(u32, u32), String> = HashMap::new();
        for (_, e) in &rows {
            for d in e.stats.io.iter().flatten() {
                devices.entry((d.major, d.minor)).or_insert_with(|| {
                    self.devnames
                        .entry((d.major, d.minor))
                        .or_insert_with(|| host::device_name(d.major, d.minor))
                        .clone()
                });
            }
        }
        let table: Vec<Row> = rows
            .iter()
            .zip(prefixes.iter())
            .map(|((_, e), prefix)| Row {
                prefix: prefix.as_ref(),
                stats: &e.stats,
                start: e.start,
                runtime: e.runtime,
                root: e.kind == Kind::Root,
            })
            .collect();
        let root_fs = self.host.root_fs.as_ref().and_then(|(dev, mp)| {
            let (used, total) = host::statvfs_usage(mp)?;
            Some(RootFs {
                device: dev,
                used,
                total,
            })
        });
        families::encode(
            out,
            &Scrape {
                rows: &table,
                now,
                cpu_cores: self.host.cpu_cores,
                mem_total: self.host.mem_total,
                devices: &devices,
                root_fs,
            },
        );
        let duration = t0.elapsed().as_secs_f64();
        let process = match process::read_self(self.host.boot_time) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!("agent process metrics: {e}");
                None
            }
        };
        families::encode_agent(
            out,
            &Agent {
                duration,
                errors: &self.errs.counts,
                version: self.version,
                process: process.as_ref(),
                kept_files: self.reader.kept() as u64,
                open_per_read_cgroups: per_read,
            },
        );
        Ok(())
    }

    fn new_entry(&mut self, path: &str, kind: Kind, ino: Option<u64>) -> Option<Entry> {
        let cgroup = Cgroup::at_path(&self.h, path);
        let meta = match self.labeler.meta(&kind) {
            Ok(m) => m,
            Err(file) => {
                self.errs
                    .error("state", path, &format!("cannot parse {}", file.display()));
                Default::default()
            }
        };
        let start = match (&kind, meta.started) {
            (_, Some(s)) => s,
            (Kind::Root, None) => self.host.boot_time,
            // A cgroup directory's control files keep their creation mtime (kernfs writes do
            // not touch it; chown by delegation changes ctime only).
            _ => {
                let (mp, root) = discover::tree_of_record(&self.h)?;
                let dir = discover::dir_in(&mp, &root, path);
                match std::fs::metadata(dir.join("cgroup.procs")) {
                    Ok(m) => m.mtime() as f64 + m.mtime_nsec() as f64 / 1e9,
                    Err(_) => return None,
                }
            }
        };
        let prefix = label_prefix(&[("id", path), ("name", &meta.name), ("image", &meta.image)]);
        Some(Entry {
            runtime: kind.runtime(),
            cgroup,
            kind,
            ino,
            prefix,
            start,
            files: self.reader.cgroup(slot::COUNT),
            stats: Stats::default(),
            fresh: false,
            netns: None,
        })
    }
}

/// What reading one cgroup needs besides the cgroup itself.
struct Cx<'a> {
    reader: &'a mut Reader,
    errs: &'a mut Errors,
    host: &'a Host,
    netns_cache: &'a mut HashMap<u64, Option<Arc<Vec<Iface>>>>,
    /// Effective CPU counts of ancestors, by directory, for cgroups whose own cpuset is empty.
    cpusets: &'a mut HashMap<Vec<u8>, Option<usize>>,
    /// memory.stat's layout as last parsed.
    stat_lines: &'a mut StatLines,
}

impl Cx<'_> {
    /// Refills `e.stats`; false when the cgroup vanished.
    fn read_stats(&mut self, path: &str, e: &mut Entry) -> bool {
        let cg = &e.cgroup;
        let prev = std::mem::take(&mut e.stats);
        let mut f = Files {
            r: &mut *self.reader,
            cg: &mut e.files,
        };
        let errs = &mut *self.errs;
        let mut st = Stats::default();
        let (acct, cpu) = (cg.dir(Controller::Cpuacct), cg.dir(Controller::Cpu));
        if let Some(d) = cpu {
            st.limits = errs.take("cpu", path, f.cpu_limits(d));
        }
        let throttled = st.limits.as_ref().is_some_and(|l| l.quota_us.is_some());
        match (acct, cpu) {
            // v2: usage and throttling share one cpu.stat; read it once.
            (Some(a), Some(c)) if a.version == Version::V2 && a.dir == c.dir => {
                if let Some((u, t)) = errs.take("cpu", path, f.cpu_stat_v2(&a.dir)) {
                    st.cpu = Some(u);
                    st.throttling = throttled.then_some(t);
                }
            }
            _ => {
                if let Some(d) = acct {
                    st.cpu = errs.take("cpu", path, f.cpu_usage(d, prev.cpu));
                }
                if let (Some(d), true) = (cpu, throttled) {
                    st.throttling = match d.version {
                        Version::V2 => errs.take("cpu", path, f.cpu_stat_v2(&d.dir).map(|x| x.1)),
                        Version::V1 => errs.take("cpu", path, f.throttling_v1(&d.dir)),
                    };
                }
            }
        }
        if let Some(d) = cg.dir(Controller::Memory) {
            let mut counters = MemCounters::default();
            let r = f.memory(d, &mut counters, self.stat_lines);
            st.mem = match (r, &e.kind) {
                // The v2 root has no memory.current: derive it from /proc/meminfo like cAdvisor.
                (Err(er), Kind::Root) if er.is_gone() && d.version == Version::V2 => {
                    host::root_memory_v2()
                }
                (r, _) => errs.take("memory", path, r).map(|m| (m, counters)),
            };
            // v2's memory read already parsed memory.events; v1 keeps OOM kills elsewhere.
            st.oom = match st.mem.as_ref().and_then(|(m, _)| m.oom.as_ref()) {
                Some(o) => Some(o.oom_kill),
                None if d.version == Version::V1 => errs.take("oom", path, f.oom_kills_v1(&d.dir)),
                // memory.events absent (the root): no OOM kills there.
                None if st.mem.is_some() => Some(0),
                None => errs
                    .take("oom", path, cgsight_cgroup::oom::read(&d.dir, d.version))
                    .map(|o| o.oom_kill),
            };
        }
        if let Some(d) = cg.dir(Controller::Cpuset) {
            st.cpuset_count = match errs.take("cpuset", path, f.cpuset_count(d)) {
                Some(Some(n)) => Some(n),
                Some(None) => ancestors_cpuset(self.cpusets, errs, path, d),
                None => None,
            };
        }
        if let Some(d) = cg.dir(Controller::Pids) {
            st.pids = errs.take("pids", path, f.pids(&d.dir));
        }
        if let Some(d) = cg.dir(Controller::Io) {
            let mut io = prev.io.unwrap_or_default();
            st.io = errs.take("io", path, f.io(d, &mut io)).map(|()| io);
        }
        if let Some(u) = &cg.unified {
            st.psi = errs.take("pressure", path, f.pressure(u));
        }
        let procs = errs.take("processes", path, f.procs(cg));
        let first_pid = procs.and_then(|p| p.1);
        st.procs = procs.map(|p| p.0);
        // Nothing readable at all: the cgroup vanished between discovery and now.
        if st.cpu.is_none() && st.mem.is_none() && st.procs.is_none() && !cg.exists() {
            e.files.close_all();
            return false;
        }
        st.net = self.network(&e.kind, first_pid, &mut e.netns);
        e.stats = st;
        true
    }

    /// Counters of the cgroup's network namespace, read once per namespace per scrape. Cgroups
    /// in the host namespace other than the root get none (their traffic is the host's).
    /// `known` caches the namespace of the cgroup's first process while that stays the same.
    fn network(
        &mut self,
        kind: &Kind,
        pid: Option<i32>,
        known: &mut Option<(i32, Option<u64>)>,
    ) -> Option<Arc<Vec<Iface>>> {
        let (ino, file) = if *kind == Kind::Root {
            (self.host.netns?, None)
        } else {
            let pid = pid?;
            let ino = match *known {
                Some((p, ino)) if p == pid => ino,
                _ => {
                    let ino = host::netns_inode(pid);
                    *known = Some((pid, ino));
                    ino
                }
            }?;
            if Some(ino) == self.host.netns {
                return None;
            }
            (ino, Some(pid))
        };
        if let Some(v) = self.netns_cache.get(&ino) {
            return v.clone();
        }
        let file = match file {
            Some(pid) => format!("/proc/{pid}/net/dev"),
            None => self.host.netdev.to_owned(),
        };
        let v = match std::fs::read_to_string(&file) {
            Ok(t) => match netdev::parse(&t) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    self.errs.error("net_dev", &file, &e);
                    None
                }
            },
            // The process exited: skip silently.
            Err(_) => None,
        };
        self.netns_cache.insert(ino, v.clone());
        v
    }
}

/// The effective CPU count from the nearest ancestor with CPUs (v1 cpusets start empty),
/// memoized per scrape by parent directory.
fn ancestors_cpuset(
    memo: &mut HashMap<Vec<u8>, Option<usize>>,
    errs: &mut Errors,
    path: &str,
    d: &ControllerDir,
) -> Option<usize> {
    // The parent directory by bytes (Path's component-wise parent and starts_with cost more
    // than the rest of this, once per cgroup per scrape); none above the mount point.
    let (dir, mp) = (
        d.dir.as_os_str().as_bytes(),
        d.mount_point.as_os_str().as_bytes(),
    );
    let parent = dir
        .iter()
        .rposition(|&c| c == b'/')
        .and_then(|i| dir.get(..i))
        .filter(|p| p.starts_with(mp) && matches!(p.get(mp.len()), None | Some(b'/')));
    let Some(parent) = parent else {
        return Some(0);
    };
    if let Some(n) = memo.get(parent) {
        return *n;
    }
    let up = ControllerDir {
        version: d.version,
        dir: PathBuf::from(OsStr::from_bytes(parent)),
        mount_point: d.mount_point.clone(),
    };
    let n = errs
        .take("cpuset", path, cgsight_cgroup::cgroup::read_cpuset(&up))
        .map(|c| c.cpus.len());
    memo.insert(parent.to_vec(), n);
    n
}
