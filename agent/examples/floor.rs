//! The floor for bench/agent-bench.sh: the least a scrape can do. Each pass walks the same tree
//! the agent discovers (`--all-cgroups`) and preads the same accounting files, kept open from
//! the first pass (within the agent's own descriptor budget; past it a file is opened per read),
//! with no parsing or encoding.
//! `floor <passes>` prints one line per pass: `pass_ms <wall ms> cpu_us <CPU µs> cgroups <n> files <n> kept <n>`.
//! `floor <passes> per-file` then prints, per file, the CPU µs per cgroup of `passes` passes
//! that pread only that file (which files the kernel makes expensive).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cgsight_cgroup::{Controller, Hierarchies};

/// The v1 files the agent reads per cgroup per scrape (cpu.stat only with a quota, which bench
/// cgroups do not have; cpuacct.usage and .stat only without usage_all). Limit files are left
/// out: the agent reads them only when inotify reports a write (one read of the inotify
/// descriptor per scrape, not modelled here).
const V1: &[(Controller, &[&str])] = &[
    (Controller::Cpuacct, &["cpuacct.usage_all"]),
    (
        Controller::Memory,
        &[
            "memory.usage_in_bytes",
            "memory.stat",
            "memory.max_usage_in_bytes",
            "memory.failcnt",
            "memory.oom_control",
        ],
    ),
    (Controller::Cpuset, &["cpuset.effective_cpus"]),
    (Controller::Pids, &["pids.current"]),
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
    "cpu.weight",
    "memory.current",
    "memory.stat",
    "memory.peak",
    "memory.events",
    "memory.swap.current",
    "cpuset.cpus.effective",
    "pids.current",
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
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = format!("{rel}/{name}");
            out.push(r.clone());
            if e.metadata().map_or(true, |m| m.nlink() != 2) {
                walk(&e.path(), out, &r);
            }
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
    let per_file = std::env::args().nth(2).is_some_and(|a| a == "per-file");
    let budget = cgsight_agent::files::descriptor_budget();
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
    if per_file {
        for (i, (mp, f)) in names.iter().enumerate() {
            let c = cpu_us();
            let mut n = 0u64;
            for _ in 0..passes {
                for slots in cgroups.values() {
                    if let Some(Slot::Kept(fh)) = slots.get(i) {
                        let _ = fh.read_at(&mut buf, 0);
                        n += 1;
                    }
                }
            }
            let us = (cpu_us() - c) as f64 / n.max(1) as f64;
            println!("file {} {f} {us:.2} us/read ({n} reads)", mp.display());
        }
    }
}
