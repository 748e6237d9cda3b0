//! `cgsight cgroup [PID|PATH] [--json]`: what cgsight sees of a process's or path's cgroup.

use std::path::Path;

use anyhow::{Context, Result};
use cgsight_cgroup::{Cgroup, Hierarchies, Membership};
use serde_json::{json, Value};

use crate::fmt;

#[derive(clap::Args)]
pub struct Args {
    /// A pid, a cgroup path (`/cgsight/<id>`), or a directory under a cgroup mount. Default:
    /// the parent of this process (the shell that ran cgsight).
    target: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<u8> {
    let h = Hierarchies::detect().context("detecting cgroup hierarchies")?;
    let (pid, cg) = resolve(&h, a.target.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report(&h, pid, &cg))?);
    } else {
        print_text(&h, pid, &cg);
    }
    Ok(0)
}

fn resolve(h: &Hierarchies, target: Option<&str>) -> Result<(Option<i32>, Cgroup)> {
    let target = target
        .map(str::to_owned)
        .unwrap_or_else(|| std::os::unix::process::parent_id().to_string());
    if let Ok(pid) = target.parse::<i32>() {
        let m = Membership::of_pid(pid).with_context(|| format!("looking up process {pid}"))?;
        return Ok((Some(pid), Cgroup::from_membership(h, &m)));
    }
    // A directory under a mount: strip the mount point to get the cgroup path.
    let p = Path::new(&target);
    for m in &h.mounts {
        if let Ok(rel) = p.strip_prefix(&m.mount_point) {
            if p.is_dir() {
                let path = format!("/{}", rel.display());
                return Ok((None, Cgroup::at_path(h, &path)));
            }
        }
    }
    let cg = Cgroup::at_path(h, &target);
    anyhow::ensure!(
        cg.exists(),
        "no cgroup {target:?} in any hierarchy (give a pid, a cgroup path like /cgsight/<id>, or a directory under /sys/fs/cgroup)"
    );
    Ok((None, cg))
}

fn field<T: serde::Serialize>(r: cgsight_cgroup::Result<T>) -> Value {
    match r {
        Ok(v) => serde_json::to_value(v).unwrap_or(Value::Null),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn report(h: &Hierarchies, pid: Option<i32>, cg: &Cgroup) -> Value {
    json!({
        "layout": h.layout,
        "hierarchies": h.mounts,
        "pid": pid,
        "cgroup": cg,
        "effective_limits": {
            "memory_bytes": field(cg.effective_memory_limit()),
            "swap_bytes": field(cg.effective_swap_limit()),
            "cpu_quota_cpus": field(cg.effective_cpu_quota()),
            "pids_max": field(cg.effective_pids_max()),
        },
        "memory": field(cg.memory()),
        "cpu_limits": field(cg.cpu_limits()),
        "cpu_usage": field(cg.cpu_usage()),
        "cpu_throttling": field(cg.cpu_throttling()),
        "cpuset": field(cg.cpuset()),
        "pids": field(cg.pids()),
        "io": field(cg.io()),
        "oom": field(cg.oom()),
        "pressure": field(cg.pressure()),
    })
}

fn print_text(h: &Hierarchies, pid: Option<i32>, cg: &Cgroup) {
    // Each accounting file is read once.
    let memory = cg.memory();
    println!("layout:  {}", h.layout);
    if let Some(pid) = pid {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        println!("process: {pid} ({})", comm.trim());
    }
    println!("cgroup:  {}", cg.path);
    for (c, d) in &cg.dirs {
        println!("  {:<8} {:?} {}", c.to_string(), d.version, d.dir.display());
    }
    if let Some(u) = &cg.unified {
        println!("  {:<8} V2 {}", "cgroup2", u.display());
    }
    println!("limits:");
    match (&memory, cg.effective_memory_limit()) {
        (Ok(m), Ok(eff)) => println!(
            "  memory      {} (effective, with ancestors: {})",
            fmt::limit(m.limit),
            fmt::limit(eff)
        ),
        (Err(e), _) => println!("  memory      unavailable: {e}"),
        (_, Err(e)) => println!("  memory      unavailable: {e}"),
    }
    if let Ok(Some(s)) = memory.as_ref().map(|m| &m.swap) {
        println!("  swap        {}", fmt::limit(s.limit));
    }
    match cg.cpu_limits() {
        Ok(l) => {
            let q = match (l.quota_us, l.cpus()) {
                (Some(q), Some(c)) => format!("{c:.2} CPUs ({q}/{} µs)", l.period_us),
                _ => "unlimited".into(),
            };
            let eff = cg
                .effective_cpu_quota()
                .ok()
                .flatten()
                .map_or("unlimited".into(), |c| format!("{c:.2} CPUs"));
            println!(
                "  cpu quota   {q} (effective: {eff}), shares {}",
                l.shares_v1().map_or("-".into(), |s| s.to_string())
            );
        }
        Err(e) => println!("  cpu quota   unavailable: {e}"),
    }
    match cg.cpuset() {
        Ok(s) => println!("  cpuset      cpus {}, mems {}", s.cpus, s.mems),
        Err(e) => println!("  cpuset      unavailable: {e}"),
    }
    match cg.effective_pids_max() {
        Ok(m) => println!(
            "  pids        {}",
            m.map_or("unlimited".into(), |v| v.to_string())
        ),
        Err(e) => println!("  pids        unavailable: {e}"),
    }
    println!("usage:");
    match &memory {
        Ok(m) => println!(
            "  memory      {} (working set {}, peak {}, failcnt {}), swap {}",
            fmt::bytes(m.usage),
            fmt::bytes(m.working_set()),
            m.peak.map_or("-".into(), fmt::bytes),
            m.failcnt.map_or("-".into(), |f| f.to_string()),
            m.swap
                .as_ref()
                .map_or("not accounted".into(), |s| fmt::bytes(s.usage)),
        ),
        Err(e) => println!("  memory      unavailable: {e}"),
    }
    match cg.cpu_usage() {
        Ok(u) => println!(
            "  cpu         {} (user {}, system {})",
            fmt::secs_ns(u.total_ns),
            fmt::secs_ns(u.user_ns),
            fmt::secs_ns(u.system_ns)
        ),
        Err(e) => println!("  cpu         unavailable: {e}"),
    }
    if let Ok(t) = cg.cpu_throttling() {
        println!(
            "  throttled   {}/{} periods, {}",
            t.throttled_periods,
            t.periods,
            fmt::secs_ns(t.throttled_ns)
        );
    }
    if let Ok(p) = cg.pids() {
        println!("  pids        {}", p.current);
    }
    if let Ok(o) = cg.oom() {
        println!("  oom kills   {}", o.oom_kill);
    }
    if let Ok(io) = cg.io() {
        for d in io {
            println!(
                "  io {}:{:<4}  read {} / {} ops, write {} / {} ops",
                d.major,
                d.minor,
                fmt::bytes(d.rbytes),
                d.rios,
                fmt::bytes(d.wbytes),
                d.wios
            );
        }
    }
    if let Ok(p) = cg.pressure() {
        for (name, psi) in [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)] {
            if let Some(psi) = psi {
                println!(
                    "  pressure    {name:<6} some avg10={:.2} total={}",
                    psi.some.avg10,
                    fmt::secs_ns(psi.some.total_us * 1000)
                );
            }
        }
    }
}
