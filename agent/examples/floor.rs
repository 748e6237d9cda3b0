//! The floor for bench/agent-bench.sh: walk the same tree and read the same accounting files
//! the agent reads, with no parsing or encoding, in one tight sequential loop.
//! `floor <iterations> [--all-cgroups]` prints one line per pass: `pass_ms <ms>`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cgsight_cgroup::{Controller, Hierarchies};

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
            "cgroup.procs",
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

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
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
    let mut buf = Vec::with_capacity(64 * 1024);
    for _ in 0..iters {
        let t = Instant::now();
        let mut paths = vec![String::new()];
        walk(&tree, &mut paths, "");
        let mut files: Vec<PathBuf> = Vec::new();
        for p in &paths {
            let rel = p.trim_start_matches('/');
            if unified_only {
                for f in V2 {
                    files.push(tree.join(rel).join(f));
                }
            } else {
                for (c, fs) in V1 {
                    if let Some(m) = h.mount_for(*c) {
                        for f in *fs {
                            files.push(m.mount_point.join(rel).join(f));
                        }
                    }
                }
                if let Some(u) = h.unified() {
                    for f in ["cpu.pressure", "memory.pressure", "io.pressure"] {
                        files.push(u.mount_point.join(rel).join(f));
                    }
                }
            }
        }
        for f in &files {
            if let Ok(mut fh) = std::fs::File::open(f) {
                buf.clear();
                let _ = fh.read_to_end(&mut buf);
            }
        }
        println!(
            "pass_ms {:.3} cgroups {} files {}",
            t.elapsed().as_secs_f64() * 1e3,
            paths.len(),
            files.len()
        );
    }
}
