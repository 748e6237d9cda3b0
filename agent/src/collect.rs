//! One scrape: discover cgroups (keeping what is known about each across scrapes), read their
//! accounting files with the cgroup crate's readers, hand the rows to [`crate::families`]. A cgroup that vanishes mid-scrape is skipped silently; a bad file costs
//! that family's series for that cgroup, is counted in `cgsight_scrape_errors_total{kind}` and
//! logged at most once a minute per kind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cgsight_cgroup::{Cgroup, Controller, Error as CgError, Hierarchies, Version};

use crate::discover::{self, Kind};
use crate::exposition::label_prefix;
use crate::families::{self, Agent, RootFs, Row, Scrape, Stats};
use crate::host::{self, Host};
use crate::labels::Labeler;
use crate::netdev::{self, Iface};
use crate::process;

/// The scrape's deadline passed before it was done; its partial output is to be discarded.
#[derive(Debug, thiserror::Error)]
#[error("the scrape deadline passed")]
pub struct DeadlinePassed;

/// Error kinds of `cgsight_scrape_errors_total`, all exported from the start at 0.
pub const ERROR_KINDS: &[&str] = &[
    "discovery",
    "cpu",
    "memory",
    "cpuset",
    "io",
    "pids",
    "oom",
    "pressure",
    "processes",
    "net_dev",
    "state",
];

/// What is known about one cgroup across scrapes.
struct Entry {
    cgroup: Cgroup,
    kind: Kind,
    /// `id="…",name="…",image="…"` escaped.
    prefix: String,
    start: f64,
    runtime: &'static str,
    seen: bool,
}

pub struct Collector {
    h: Hierarchies,
    all: bool,
    labeler: Labeler,
    entries: HashMap<String, Entry>,
    devnames: HashMap<(u32, u32), String>,
    errors: BTreeMap<&'static str, u64>,
    last_logged: HashMap<&'static str, Instant>,
    host: Host,
    version: &'static str,
}

impl Collector {
    pub fn new(h: Hierarchies, all: bool, state_dir: PathBuf) -> Self {
        Collector {
            h,
            all,
            labeler: Labeler::new(state_dir),
            entries: HashMap::new(),
            devnames: HashMap::new(),
            errors: ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
            last_logged: HashMap::new(),
            host: Host::probe(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn error(&mut self, kind: &'static str, path: &str, e: &dyn std::fmt::Display) {
        *self.errors.entry(kind).or_insert(0) += 1;
        let now = Instant::now();
        let due = self
            .last_logged
            .get(kind)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
        if due {
            self.last_logged.insert(kind, now);
            tracing::warn!(
                kind,
                cgroup = path,
                "scrape error (further ones of this kind are counted, not logged, for 60 s): {e}"
            );
        }
    }

    /// Reads a family, turning "gone" into None silently and other errors into a count.
    fn take<T>(&mut self, kind: &'static str, path: &str, r: Result<T, CgError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if e.is_gone() => None,
            Err(CgError::NoController(_)) => None,
            Err(e) => {
                self.error(kind, path, &e);
                None
            }
        }
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
                self.error("discovery", "/", &e);
                vec![discover::Found {
                    path: "/".into(),
                    kind: Kind::Root,
                }]
            }
        };
        for e in self.entries.values_mut() {
            e.seen = false;
        }
        let mut order = Vec::with_capacity(found.len());
        for f in found {
            if !self.entries.contains_key(&f.path) {
                let Some(entry) = self.new_entry(&f.path, f.kind) else {
                    continue;
                };
                self.entries.insert(f.path.clone(), entry);
            }
            if let Some(e) = self.entries.get_mut(&f.path) {
                e.seen = true;
            }
            order.push(f.path);
        }
        self.entries.retain(|_, e| e.seen);
        let live: HashSet<&str> = self.entries.values().filter_map(|e| e.kind.id()).collect();
        self.labeler.retain(&live);

        let mut netns_cache: HashMap<u64, Option<Rc<Vec<Iface>>>> = HashMap::new();
        let mut rows: Vec<(String, Stats)> = Vec::with_capacity(order.len());
        for path in order {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(DeadlinePassed);
            }
            let Some(e) = self.entries.get(&path) else {
                continue;
            };
            let cg = e.cgroup.clone();
            let kind = e.kind.clone();
            let Some(st) = self.read_stats(&path, &cg, &kind, &mut netns_cache) else {
                continue;
            };
            rows.push((path, st));
        }

        let kube = rows.iter().any(|(p, _)| {
            self.entries
                .get(p)
                .is_some_and(|e| e.kind.pod_uid().is_some())
        });
        let prefixes: Vec<String> = rows
            .iter()
            .map(|(p, _)| match self.entries.get(p) {
                Some(e) if kube => {
                    let pod = e.kind.pod_uid().unwrap_or("");
                    format!(
                        "{},{}",
                        e.prefix,
                        label_prefix(&[("pod", pod), ("namespace", ""), ("container", "")])
                    )
                }
                Some(e) => e.prefix.clone(),
                None => String::new(),
            })
            .collect();
        let mut devices: HashMap<(u32, u32), String> = HashMap::new();
        for (_, st) in &rows {
            for d in st.io.iter().flatten() {
                devices
                    .entry((d.major, d.minor))
                    .or_insert_with(|| self.devname(d.major, d.minor));
            }
        }
        let table: Vec<Row> = rows
            .iter()
            .zip(prefixes.iter())
            .filter_map(|((path, stats), prefix)| {
                let e = self.entries.get(path)?;
                Some(Row {
                    prefix,
                    stats,
                    start: e.start,
                    runtime: e.runtime,
                    root: e.kind == Kind::Root,
                })
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
                errors: &self.errors,
                version: self.version,
                process: process.as_ref(),
            },
        );
        Ok(())
    }

    fn new_entry(&mut self, path: &str, kind: Kind) -> Option<Entry> {
        let cgroup = Cgroup::at_path(&self.h, path);
        let meta = match self.labeler.meta(&kind) {
            Ok(m) => m,
            Err(file) => {
                self.error("state", path, &format!("cannot parse {}", file.display()));
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
            prefix,
            start,
            seen: true,
        })
    }

    fn read_stats(
        &mut self,
        path: &str,
        cg: &Cgroup,
        kind: &Kind,
        netns_cache: &mut HashMap<u64, Option<Rc<Vec<Iface>>>>,
    ) -> Option<Stats> {
        let mut st = Stats::default();
        let (acct, cpu) = (
            cg.dir(Controller::Cpuacct).cloned(),
            cg.dir(Controller::Cpu).cloned(),
        );
        if let Some(d) = &cpu {
            st.limits = self.take(
                "cpu",
                path,
                cgsight_cgroup::cpu::read_limits(&d.dir, d.version),
            );
        }
        let throttled = st.limits.as_ref().is_some_and(|l| l.quota_us.is_some());
        match (&acct, &cpu) {
            // v2: usage and throttling share one cpu.stat; read it once.
            (Some(a), Some(c)) if a.version == Version::V2 && a.dir == c.dir => {
                if let Some((u, t)) =
                    self.take("cpu", path, cgsight_cgroup::cpu::read_stat_v2(&a.dir))
                {
                    st.cpu = Some(u);
                    st.throttling = throttled.then_some(t);
                }
            }
            _ => {
                if let Some(d) = &acct {
                    st.cpu = self.take(
                        "cpu",
                        path,
                        cgsight_cgroup::cpu::read_usage(&d.dir, d.version),
                    );
                }
                if let (Some(d), true) = (&cpu, throttled) {
                    st.throttling = self.take(
                        "cpu",
                        path,
                        cgsight_cgroup::cpu::read_throttling(&d.dir, d.version),
                    );
                }
            }
        }
        if let Some(d) = cg.dir(Controller::Memory).cloned() {
            let r = cgsight_cgroup::memory::read(&d.dir, d.version);
            st.mem = match (r, kind) {
                // The v2 root has no memory.current: derive it from /proc/meminfo like cAdvisor.
                (Err(e), Kind::Root) if e.is_gone() && d.version == Version::V2 => {
                    host::root_memory_v2()
                }
                (r, _) => self.take("memory", path, r),
            };
            // v2's memory read already parsed memory.events; v1 keeps OOM kills elsewhere.
            st.oom = match st.mem.as_ref().and_then(|m| m.oom.as_ref()) {
                Some(o) => Some(o.oom_kill),
                None => self
                    .take("oom", path, cgsight_cgroup::oom::read(&d.dir, d.version))
                    .map(|o| o.oom_kill),
            };
        }
        if let Some(d) = cg.dir(Controller::Cpuset).cloned() {
            st.cpuset_count = self
                .take("cpuset", path, cgsight_cgroup::cgroup::read_cpuset(&d))
                .map(|c| c.cpus.len());
        }
        if let Some(d) = cg.dir(Controller::Pids).cloned() {
            st.pids = self.take("pids", path, cgsight_cgroup::pids::read(&d.dir, d.version));
        }
        if let Some(d) = cg.dir(Controller::Io).cloned() {
            st.io = self.take("io", path, cgsight_cgroup::io::read(&d.dir, d.version));
        }
        if cg.unified.is_some() {
            st.psi = self.take("pressure", path, cg.pressure());
        }
        let procs = self.take("processes", path, cg.procs());
        let first_pid = procs.as_ref().and_then(|p| p.first().copied());
        st.procs = procs.map(|p| p.len());
        // Nothing readable at all: the cgroup vanished between discovery and now.
        if st.cpu.is_none() && st.mem.is_none() && st.procs.is_none() && !cg.exists() {
            return None;
        }
        st.net = self.network(kind, first_pid, netns_cache);
        Some(st)
    }

    /// Counters of the cgroup's network namespace, read once per namespace per scrape. Cgroups
    /// in the host namespace other than the root get none (their traffic is the host's).
    fn network(
        &mut self,
        kind: &Kind,
        pid: Option<i32>,
        cache: &mut HashMap<u64, Option<Rc<Vec<Iface>>>>,
    ) -> Option<Rc<Vec<Iface>>> {
        let (ino, file) = if *kind == Kind::Root {
            (self.host.netns?, self.host.netdev.to_owned())
        } else {
            let pid = pid?;
            let ino = host::netns_inode(pid)?;
            if Some(ino) == self.host.netns {
                return None;
            }
            (ino, format!("/proc/{pid}/net/dev"))
        };
        if let Some(v) = cache.get(&ino) {
            return v.clone();
        }
        let v = match std::fs::read_to_string(&file) {
            Ok(t) => match netdev::parse(&t) {
                Ok(v) => Some(Rc::new(v)),
                Err(e) => {
                    self.error("net_dev", &file, &e);
                    None
                }
            },
            // The process exited: skip silently.
            Err(_) => None,
        };
        cache.insert(ino, v.clone());
        v
    }

    fn devname(&mut self, major: u32, minor: u32) -> String {
        self.devnames
            .entry((major, minor))
            .or_insert_with(|| host::device_name(major, minor))
            .clone()
    }
}
