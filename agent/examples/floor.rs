//! The floor for bench/agent-bench.sh: the least a scrape can do. Each pass walks the same tree
//! the agent discovers (`--all-cgroups`) and preads the same accounting files, kept open from
//! the first pass (within the soft descriptor limit, raised to the hard one, as the agent does;
//! past it a file is opened per read), with no parsing or encoding.
//! `floor <passes>` prints one line per pass: `pass_ms <wall ms> cpu_us <CPU µs> cgroups <n> files <n> kept <n>`.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cgsight_cgroup::{Controller, Hierarchies};

/// The v1 files the agent reads per cgroup (cpu.stat only with a quota, which bench cgroups
/// do not have; cpuset.cpus only when effective_cpus is empty).
const V1: &[(Controller, &[&str])] = &[
    (Controller::Cpuacct, &["cpuacct.usage", "cpuacct.usage_all"]),
    (
        Controller::Cpu,
        &["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"],
    ),
    (
        Controller::Memory,
        &[
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "memory.stat",
            "memory.max_usage_in_bytes",
            "memory.failcnt",
            "memory.memsw.usage_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.oom_control",
        ],
    ),
    (Controller::Cpuset, &["cpuset.effective_cpus"]),
    (Controller::Pids, &["pids.current", "pids.max"]),
    (
        Controller::Io,
        &[
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_serviced_recursive",
        ],
    ),
];
const V2: &[&str] = &[
    "cpu.stat",
    "cpu.max",
    "cpu.weight",
    "memory.current",
    "memory.max",
    "memory.stat",
    "memory.peak",
    "memory.events",
    "memory.swap.current",
    "memory.swap.max",
    "cpuset.cpus.effective",
    "pids.current",
    "pids.max",
    "io.stat",
    "cgroup.procs",
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
];
/// On hybrid hosts, what the agent reads from the cgroup2 directory.
const UNIFIED: &[&str] = &[
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
    "cgroup.procs",
];

fn walk(dir: &Path, out: &mut Vec<String>, rel: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = format!("{rel}/{name}");
            out.push(r.clone());
            walk(&e.path(), out, &r);
        }
    }
}

fn cpu_us() -> u64 {
    // SAFETY: rusage is plain data and `u` a valid out-pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(u.ru_utime) + us(u.ru_stime)
}

fn raise_nofile() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid out-pointer; the new limit only raises soft to hard.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    (r.rlim_cur as usize).saturating_sub(256)
}

enum Slot {
    Kept(File),
    PerRead,
    Missing,
}

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let budget = raise_nofile();
    let h = Hierarchies::detect().expect("cgroup hierarchies");
    let unified_only = h.layout == cgsight_cgroup::Layout::Unified;
    let tree = if unified_only {
        h.unified()
    } else {
        h.mount_for(Controller::Memory)
    }
    .expect("tree of record")
    .mount_point
    .clone();
    // (mount point, file name) of every file read per cgroup, in order.
    let mut names: Vec<(PathBuf, &str)> = Vec::new();
    if unified_only {
        names.extend(V2.iter().map(|f| (tree.clone(), *f)));
    } else {
        for (c, fs) in V1 {
            if let Some(m) = h.mount_for(*c) {
                names.extend(fs.iter().map(|f| (m.mount_point.clone(), *f)));
            }
        }
        if let Some(u) = h.unified() {
            names.extend(UNIFIED.iter().map(|f| (u.mount_point.clone(), *f)));
        }
    }
    let mut cgroups: HashMap<String, Vec<Slot>> = HashMap::new();
    let mut kept = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..passes {
        let (t, c) = (Instant::now(), cpu_us());
        let mut paths = vec![String::new()];
        walk(&tree, &mut paths, "");
        let mut files = 0usize;
        for p in &paths {
            let rel = p.trim_start_matches('/');
            let slots = cgroups
                .entry(p.clone())
                .or_insert_with(|| names.iter().map(|_| Slot::PerRead).collect());
            for (slot, (mp, f)) in slots.iter_mut().zip(&names) {
                files += 1;
                match slot {
                    Slot::Kept(fh) => {
                        let _ = fh.read_at(&mut buf, 0);
                    }
                    Slot::Missing => {}
                    Slot::PerRead => match File::open(mp.join(rel).join(f)) {
                        Ok(fh) => {
                            let _ = fh.read_at(&mut buf, 0);
                            if kept < budget {
                                kept += 1;
                                *slot = Slot::Kept(fh);
                            }
                        }
                        Err(_) => *slot = Slot::Missing,
                    },
                }
            }
        }
        println!(
            "pass_ms {:.3} cpu_us {} cgroups {} files {} kept {}",
            t.elapsed().as_secs_f64() * 1e3,
            cpu_us() - c,
            paths.len(),
            files,
            kept
        );
    }
}
