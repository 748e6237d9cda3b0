//! One scrape: discover cgroups, read their accounting files with the cgroup crate's readers,
//! encode every family. A cgroup that vanishes mid-scrape is skipped silently; a bad file costs
//! that family's series for that cgroup, is counted in `cgsight_scrape_errors_total{kind}` and
//! logged at most once a minute per kind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cgsight_cgroup::cpu::{CpuLimits, CpuUsage, Throttling};
use cgsight_cgroup::io::IoDevice;
use cgsight_cgroup::memory::Memory;
use cgsight_cgroup::pids::Pids;
use cgsight_cgroup::pressure::Pressure;
use cgsight_cgroup::{Cgroup, Controller, Error as CgError, Hierarchies, Version};

use crate::discover::{self, Kind};
use crate::exposition::{label_prefix, Enc, Type, Val};
use crate::labels::Labeler;
use crate::netdev::{self, Iface};

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

/// Values above this are "unlimited" (cAdvisor reports them as 0).
const UNLIMITED: u64 = 1 << 62;

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

/// One cgroup's readings in this scrape.
#[derive(Default)]
struct Stats {
    cpu: Option<CpuUsage>,
    limits: Option<CpuLimits>,
    throttling: Option<Throttling>,
    mem: Option<Memory>,
    cpuset_count: Option<usize>,
    pids: Option<Pids>,
    procs: Option<usize>,
    io: Option<Vec<IoDevice>>,
    oom: Option<u64>,
    psi: Option<Pressure>,
    net: Option<Rc<Vec<Iface>>>,
}

pub struct Collector {
    h: Hierarchies,
    all: bool,
    labeler: Labeler,
    entries: HashMap<String, Entry>,
    devnames: HashMap<(u32, u32), String>,
    errors: BTreeMap<&'static str, u64>,
    last_logged: HashMap<&'static str, Instant>,
    host_netns: Option<u64>,
    /// The root cgroup's net/dev: pid 1's when we can see its namespace, else our own.
    host_netdev: &'static str,
    boot_time: f64,
    cpu_cores: u64,
    mem_total: u64,
    root_fs: Option<(String, PathBuf)>,
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
            host_netns: netns_inode(1).or_else(|| netns_of("/proc/self/ns/net")),
            host_netdev: if netns_inode(1).is_some() {
                "/proc/1/net/dev"
            } else {
                "/proc/self/net/dev"
            },
            boot_time: boot_time().unwrap_or(0.0),
            cpu_cores: online_cpus(),
            mem_total: mem_total().unwrap_or(0),
            root_fs: root_device().map(|d| (d, PathBuf::from("/"))),
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
        let mut prefixes: Vec<String> = Vec::with_capacity(rows.len());
        for (p, _) in &rows {
            let e = &self.entries[p];
            if kube {
                let pod = e.kind.pod_uid().unwrap_or("");
                prefixes.push(format!(
                    "{},{}",
                    e.prefix,
                    label_prefix(&[("pod", pod), ("namespace", ""), ("container", "")])
                ));
            } else {
                prefixes.push(e.prefix.clone());
            }
        }
        self.encode(out, &rows, &prefixes, now);
        let mut enc = Enc::new(out);
        enc.family(
            "cgsight_scrape_duration_seconds",
            "Time the agent spent collecting this scrape.",
            Type::Gauge,
        );
        enc.sample("", &[], t0.elapsed().as_secs_f64());
        enc.family(
            "cgsight_scrape_errors_total",
            "Accounting files the agent failed to read or parse, by kind.",
            Type::Counter,
        );
        for (k, v) in &self.errors {
            enc.sample("", &[("kind", k)], *v);
        }
        enc.family(
            "cgsight_build_info",
            "cgsight agent build information.",
            Type::Gauge,
        );
        enc.sample("", &[("version", self.version)], 1u64);
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
            (Kind::Root, None) => self.boot_time,
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
                (Err(e), Kind::Root) if e.is_gone() && d.version == Version::V2 => root_memory_v2(),
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
            (self.host_netns?, self.host_netdev.to_owned())
        } else {
            let pid = pid?;
            let ino = netns_inode(pid)?;
            if Some(ino) == self.host_netns {
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
            .or_insert_with(|| device_name(major, minor))
            .clone()
    }

    fn encode(
        &mut self,
        out: &mut String,
        rows: &[(String, Stats)],
        prefixes: &[String],
        now: f64,
    ) {
        // Device names resolved before borrowing `out` through the encoder.
        let mut devs: HashMap<(u32, u32), String> = HashMap::new();
        for (_, st) in rows {
            for d in st.io.iter().flatten() {
                let k = (d.major, d.minor);
                if let std::collections::hash_map::Entry::Vacant(v) = devs.entry(k) {
                    v.insert(self.devname(d.major, d.minor));
                }
            }
        }
        let entries = &self.entries;
        let mut e = Enc::new(out);
        let it = || {
            rows.iter()
                .zip(prefixes.iter())
                .map(|((_, s), p)| (s, p.as_str()))
        };

        // CPU.
        e.family(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            Type::Counter,
        );
        let mut cpu_label = String::new();
        for (s, p) in it() {
            let Some(c) = &s.cpu else { continue };
            match &c.per_cpu {
                // v1 with cpuacct.usage_all: one series per CPU (as cAdvisor with percpu), never
                // together with cpu="total".
                Some(per) if !per.is_empty() => {
                    for pc in per {
                        cpu_label.clear();
                        use std::fmt::Write as _;
                        let _ = write!(cpu_label, "cpu{:02}", pc.cpu);
                        e.sample(
                            p,
                            &[("cpu", &cpu_label)],
                            ns_to_s(pc.user_ns + pc.system_ns),
                        );
                    }
                }
                _ => e.sample(p, &[("cpu", "total")], ns_to_s(c.total_ns)),
            }
        }
        e.family(
            "container_cpu_user_seconds_total",
            "Cumulative user cpu time consumed in seconds.",
            Type::Counter,
        );
        for (s, p) in it() {
            if let Some(c) = &s.cpu {
                e.sample(p, &[], ns_to_s(c.user_ns));
            }
        }
        e.family(
            "container_cpu_system_seconds_total",
            "Cumulative system cpu time consumed in seconds.",
            Type::Counter,
        );
        for (s, p) in it() {
            if let Some(c) = &s.cpu {
                e.sample(p, &[], ns_to_s(c.system_ns));
            }
        }
        type ThrF = fn(&Throttling) -> Val;
        let throttling_families: [(&'static str, &str, ThrF); 3] = [
            (
                "container_cpu_cfs_periods_total",
                "Number of elapsed enforcement period intervals.",
                |t| t.periods.into(),
            ),
            (
                "container_cpu_cfs_throttled_periods_total",
                "Number of throttled period intervals.",
                |t| t.throttled_periods.into(),
            ),
            (
                "container_cpu_cfs_throttled_seconds_total",
                "Total time duration the container has been throttled.",
                |t| ns_to_s(t.throttled_ns).into(),
            ),
        ];
        for (name, help, f) in throttling_families {
            e.family(name, help, Type::Counter);
            for (s, p) in it() {
                if let Some(t) = &s.throttling {
                    e.sample(p, &[], f(t));
                }
            }
        }

        // Memory.
        type MemF = fn(&Memory) -> u64;
        let mem_families: [(&'static str, &str, Type, MemF); 8] = [
            ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", Type::Gauge, |m| m.usage),
            ("container_memory_working_set_bytes", "Current working set in bytes.", Type::Gauge, |m| m.working_set()),
            ("container_memory_rss", "Size of RSS in bytes.", Type::Gauge, |m| m.stat.anon().unwrap_or(0)),
            ("container_memory_cache", "Number of bytes of page cache memory.", Type::Gauge, |m| m.stat.file().unwrap_or(0)),
            ("container_memory_swap", "Container swap usage in bytes.", Type::Gauge, |m| m.swap.as_ref().map_or(0, |s| s.usage)),
            ("container_memory_mapped_file", "Size of memory mapped files in bytes.", Type::Gauge, |m| m.stat.file_mapped().unwrap_or(0)),
            ("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", Type::Gauge, |m| m.peak.unwrap_or(0)),
            ("container_memory_failcnt", "Number of memory usage hits limits.", Type::Counter, |m| m.failcnt.unwrap_or(0)),
        ];
        for (name, help, t, f) in mem_families {
            e.family(name, help, t);
            for (s, p) in it() {
                if let Some(m) = &s.mem {
                    e.sample(p, &[], f(m));
                }
            }
        }
        e.family(
            "container_memory_failures_total",
            "Cumulative count of memory allocation failures.",
            Type::Counter,
        );
        for (s, p) in it() {
            let Some(m) = &s.mem else { continue };
            let raw = &m.stat.raw;
            for (ft, key, total_key) in [
                ("pgfault", "pgfault", "total_pgfault"),
                ("pgmajfault", "pgmajfault", "total_pgmajfault"),
            ] {
                // v1: plain keys are this cgroup only, total_* include descendants; v2 is
                // hierarchical only.
                let own = raw.get(key).copied().unwrap_or(0);
                let hier = raw.get(total_key).copied().unwrap_or(own);
                e.sample(p, &[("failure_type", ft), ("scope", "container")], own);
                e.sample(p, &[("failure_type", ft), ("scope", "hierarchy")], hier);
            }
        }
        e.family(
            "container_oom_events_total",
            "Count of out of memory events observed for the container.",
            Type::Counter,
        );
        for (s, p) in it() {
            if let Some(o) = s.oom {
                e.sample(p, &[], o);
            }
        }

        // Spec.
        e.family(
            "container_spec_memory_limit_bytes",
            "Memory limit for the container (0 = unlimited).",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(m) = &s.mem {
                e.sample(p, &[], limit_or_zero(m.limit));
            }
        }
        e.family(
            "container_spec_memory_swap_limit_bytes",
            "Memory swap limit for the container (0 = unlimited).",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(m) = &s.mem {
                let l = m.swap.as_ref().and_then(|s| s.memsw_limit.or(s.limit));
                e.sample(p, &[], limit_or_zero(l));
            }
        }
        e.family(
            "container_spec_cpu_period",
            "CPU period of the container.",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(l) = &s.limits {
                e.sample(p, &[], l.period_us);
            }
        }
        e.family(
            "container_spec_cpu_quota",
            "CPU quota of the container.",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(q) = s.limits.as_ref().and_then(|l| l.quota_us) {
                e.sample(p, &[], q);
            }
        }
        e.family(
            "container_spec_cpu_shares",
            "CPU share of the container.",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(sh) = s.limits.as_ref().and_then(|l| l.shares_v1()) {
                e.sample(p, &[], sh);
            }
        }
        e.family(
            "container_spec_cpuset_cpus_count",
            "Number of CPUs in the container's effective cpuset.",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(c) = s.cpuset_count {
                e.sample(p, &[], c as u64);
            }
        }
        e.family(
            "container_spec_pids_max",
            "Maximum number of tasks of the container (0 = unlimited).",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(pi) = &s.pids {
                e.sample(p, &[], limit_or_zero(pi.max));
            }
        }

        // Processes.
        e.family(
            "container_processes",
            "Number of processes running inside the container.",
            Type::Gauge,
        );
        for (s, p) in it() {
            if let Some(n) = s.procs {
                e.sample(p, &[], n as u64);
            }
        }
        type PidsF = fn(&Pids) -> u64;
        let threads_families: [(&'static str, &str, PidsF); 2] = [
            (
                "container_threads",
                "Number of threads running inside the container.",
                |pi| pi.current,
            ),
            (
                "container_threads_max",
                "Maximum number of threads allowed inside the container (0 = unlimited).",
                |pi| limit_or_zero(pi.max),
            ),
        ];
        for (name, help, f) in threads_families {
            e.family(name, help, Type::Gauge);
            for (s, p) in it() {
                if let Some(pi) = &s.pids {
                    e.sample(p, &[], f(pi));
                }
            }
        }

        // Block I/O.
        type IoF = fn(&IoDevice) -> u64;
        let io_families: [(&'static str, &str, IoF); 4] = [
            (
                "container_fs_reads_bytes_total",
                "Cumulative count of bytes read.",
                |d| d.rbytes,
            ),
            (
                "container_fs_writes_bytes_total",
                "Cumulative count of bytes written.",
                |d| d.wbytes,
            ),
            (
                "container_fs_reads_total",
                "Cumulative count of reads completed.",
                |d| d.rios,
            ),
            (
                "container_fs_writes_total",
                "Cumulative count of writes completed.",
                |d| d.wios,
            ),
        ];
        for (name, help, f) in io_families {
            e.family(name, help, Type::Counter);
            for (s, p) in it() {
                for d in s.io.iter().flatten() {
                    let dev = devs
                        .get(&(d.major, d.minor))
                        .map(String::as_str)
                        .unwrap_or("");
                    e.sample(p, &[("device", dev)], f(d));
                }
            }
        }
        if let Some((dev, mp)) = &self.root_fs {
            if let Some((used, total)) = statvfs_usage(mp) {
                let root_prefix = rows
                    .iter()
                    .zip(prefixes.iter())
                    .find(|((path, _), _)| entries.get(path).is_some_and(|x| x.kind == Kind::Root))
                    .map(|(_, p)| p.as_str());
                if let Some(rp) = root_prefix {
                    e.family(
                        "container_fs_usage_bytes",
                        "Number of bytes that are consumed by the container on this filesystem.",
                        Type::Gauge,
                    );
                    e.sample(rp, &[("device", dev)], used);
                    e.family(
                        "container_fs_limit_bytes",
                        "Number of bytes that can be consumed by the container on this filesystem.",
                        Type::Gauge,
                    );
                    e.sample(rp, &[("device", dev)], total);
                }
            }
        }

        // Network.
        type NetF = fn(&Iface) -> u64;
        let net_families: [(&'static str, &str, NetF); 8] = [
            (
                "container_network_receive_bytes_total",
                "Cumulative count of bytes received.",
                |i| i.rx_bytes,
            ),
            (
                "container_network_receive_packets_total",
                "Cumulative count of packets received.",
                |i| i.rx_packets,
            ),
            (
                "container_network_receive_errors_total",
                "Cumulative count of errors encountered while receiving.",
                |i| i.rx_errors,
            ),
            (
                "container_network_receive_packets_dropped_total",
                "Cumulative count of packets dropped while receiving.",
                |i| i.rx_dropped,
            ),
            (
                "container_network_transmit_bytes_total",
                "Cumulative count of bytes transmitted.",
                |i| i.tx_bytes,
            ),
            (
                "container_network_transmit_packets_total",
                "Cumulative count of packets transmitted.",
                |i| i.tx_packets,
            ),
            (
                "container_network_transmit_errors_total",
                "Cumulative count of errors encountered while transmitting.",
                |i| i.tx_errors,
            ),
            (
                "container_network_transmit_packets_dropped_total",
                "Cumulative count of packets dropped while transmitting.",
                |i| i.tx_dropped,
            ),
        ];
        for (name, help, f) in net_families {
            e.family(name, help, Type::Counter);
            for (s, p) in it() {
                for i in s.net.iter().flat_map(|v| v.iter()) {
                    e.sample(p, &[("interface", &i.name)], f(i));
                }
            }
        }

        // Pressure (cgroup2 PSI files; absent on pure v1).
        type PsiF = fn(&Pressure) -> Option<&cgsight_cgroup::pressure::Psi>;
        let psi: [(&'static str, &'static str, PsiF, bool); 6] = [
            ("container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", |p| p.cpu.as_ref(), false),
            ("container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", |p| p.cpu.as_ref(), true),
            ("container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", |p| p.memory.as_ref(), false),
            ("container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", |p| p.memory.as_ref(), true),
            ("container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", |p| p.io.as_ref(), false),
            ("container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", |p| p.io.as_ref(), true),
        ];
        for (name, help, f, full) in psi {
            e.family(name, help, Type::Counter);
            for (s, p) in it() {
                let Some(ps) = s.psi.as_ref().and_then(f) else {
                    continue;
                };
                let us = if full {
                    ps.full.as_ref().map_or(0, |l| l.total_us)
                } else {
                    ps.some.total_us
                };
                e.sample(p, &[], us as f64 / 1e6);
            }
        }

        // Identity and liveness.
        e.family(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds.",
            Type::Gauge,
        );
        for ((path, _), p) in rows.iter().zip(prefixes.iter()) {
            if let Some(en) = entries.get(path) {
                e.sample(p, &[], en.start);
            }
        }
        e.family(
            "container_last_seen",
            "Last time a container was seen by the exporter.",
            Type::Gauge,
        );
        for (_, p) in it() {
            e.sample(p, &[], now.floor());
        }
        e.family(
            "container_info",
            "Container identity: one series per container, value 1.",
            Type::Gauge,
        );
        for ((path, _), p) in rows.iter().zip(prefixes.iter()) {
            if let Some(en) = entries.get(path) {
                e.sample(p, &[("runtime", en.runtime)], 1u64);
            }
        }
        e.family(
            "machine_cpu_cores",
            "Number of logical CPU cores.",
            Type::Gauge,
        );
        e.sample("", &[], self.cpu_cores);
        e.family(
            "machine_memory_bytes",
            "Amount of memory installed on the machine.",
            Type::Gauge,
        );
        e.sample("", &[], self.mem_total);
    }
}

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn limit_or_zero(l: Option<u64>) -> u64 {
    match l {
        Some(v) if v < UNLIMITED => v,
        _ => 0,
    }
}

fn netns_of(p: &str) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

fn netns_inode(pid: i32) -> Option<u64> {
    netns_of(&format!("/proc/{pid}/ns/net"))
}

fn boot_time() -> Option<f64> {
    let t = std::fs::read_to_string("/proc/stat").ok()?;
    t.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn online_cpus() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u64
    } else {
        1
    }
}

fn meminfo() -> Option<HashMap<String, u64>> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(
        t.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                let n: u64 = v.split_whitespace().next()?.parse().ok()?;
                Some((k.to_owned(), n * 1024))
            })
            .collect(),
    )
}

fn mem_total() -> Option<u64> {
    meminfo()?.get("MemTotal").copied()
}

/// The v2 root's memory from /proc/meminfo (the root has no memory.current).
fn root_memory_v2() -> Option<Memory> {
    let m = meminfo()?;
    let g = |k: &str| m.get(k).copied().unwrap_or(0);
    let usage = g("MemTotal").saturating_sub(g("MemFree"));
    let mut raw = BTreeMap::new();
    raw.insert("inactive_file".to_owned(), g("Inactive(file)"));
    raw.insert("active_file".to_owned(), g("Active(file)"));
    raw.insert("file".to_owned(), g("Cached"));
    raw.insert("anon".to_owned(), g("AnonPages"));
    raw.insert("file_mapped".to_owned(), g("Mapped"));
    Some(Memory {
        usage,
        limit: None,
        peak: None,
        failcnt: None,
        swap: None,
        oom: None,
        stat: cgsight_cgroup::memory::MemoryStat {
            version: Some(Version::V2),
            raw,
        },
    })
}

/// `/dev/<DEVNAME>` of a block device, from sysfs; `major:minor` if unknown.
fn device_name(major: u32, minor: u32) -> String {
    let p = format!("/sys/dev/block/{major}:{minor}/uevent");
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The mount source of `/` (the topmost mount there).
fn root_device() -> Option<String> {
    let m = cgsight_cgroup::mountinfo::read_self().ok()?;
    cgsight_cgroup::mountinfo::top_mount_at(&m, Path::new("/")).map(|e| e.source.clone())
}

fn statvfs_usage(p: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and s a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let bs = s.f_frsize as u64;
    let total = s.f_blocks as u64 * bs;
    let used = (s.f_blocks as u64).saturating_sub(s.f_bfree as u64) * bs;
    Some((used, total))
}
