//! `cgsight ps`: list containers with memory and CPU use.

use std::thread;
use std::time::{Duration, Instant};

use cgsight_cgroup::{Cgroup, Hierarchies};
use cgsight_launcher::views::{self, ViewsHealth};
use cgsight_launcher::{State, Status, Store};

use crate::fmt;

#[derive(clap::Args)]
pub struct Args {
    /// Show all containers (default: running only).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only print ids.
    #[arg(short = 'q', long)]
    quiet: bool,
}

fn ago(t: f64) -> String {
    let s = (cgsight_launcher::state::now() - t).max(0.0) as u64;
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

fn status(s: &State) -> String {
    match (s.status, s.exit_code, s.supervisor_dead) {
        (_, _, true) => "dead".to_string(),
        (Status::Exited, Some(c), _) => format!("exited ({c})"),
        (Status::Running, _, _) => match s.pid.map(views::health) {
            // A container whose /proc files fail looks healthy otherwise: say so.
            Some(h @ (ViewsHealth::Broken | ViewsHealth::Hung)) => {
                format!("running (views {})", h.as_str())
            }
            _ => "running".to_string(),
        },
        (st, _, _) => st.to_string(),
    }
}

/// CPU % is measured over 100 ms (two cgroup usage samples), 100 % = one CPU.
pub fn run(a: Args) -> anyhow::Result<u8> {
    let store = Store::from_env();
    let list: Vec<State> = store
        .list()
        .into_iter()
        .filter(|s| a.all || s.status == Status::Running)
        .collect();
    if a.quiet {
        for s in &list {
            println!("{}", s.short_id());
        }
        return Ok(0);
    }
    let h = Hierarchies::detect()?;
    let cgs: Vec<Option<Cgroup>> = list
        .iter()
        .map(|s| (s.status == Status::Running).then(|| Cgroup::at_path(&h, &s.cgroup_path)))
        .collect();
    let first: Vec<Option<u64>> = cgs
        .iter()
        .map(|c| {
            c.as_ref()
                .and_then(|c| c.cpu_usage().ok())
                .map(|u| u.total_ns)
        })
        .collect();
    let t0 = Instant::now();
    if cgs.iter().any(Option::is_some) {
        thread::sleep(Duration::from_millis(100));
    }
    let dt = t0.elapsed().as_nanos() as f64;
    println!(
        "{:<12}  {:<24}  {:<24}  {:<16}  {:>7}  {:>21}  {:>6}  {:<14}  {:<15}  PORTS",
        "ID", "NAME", "IMAGE", "STATUS", "PID", "MEM USAGE / LIMIT", "CPU %", "CREATED", "ADDRESS"
    );
    for ((s, cg), f) in list.iter().zip(&cgs).zip(&first) {
        let (mem, cpu) = match cg {
            Some(c) => {
                let mem = c.memory().ok().map_or("-".to_string(), |m| {
                    let lim = fmt::limit(c.effective_memory_limit().ok().flatten());
                    format!("{} / {lim}", fmt::bytes(m.usage))
                });
                let cpu = match (f, c.cpu_usage().ok()) {
                    (Some(a), Some(b)) => {
                        format!("{:.1}", (b.total_ns.saturating_sub(*a)) as f64 / dt * 100.0)
                    }
                    _ => "-".into(),
                };
                (mem, cpu)
            }
            None => ("-".into(), "-".into()),
        };
        let pid = match s.status {
            Status::Running => s.pid.map_or("-".into(), |p| p.to_string()),
            _ => "-".into(),
        };
        // A stopped container has given its address back.
        let (addr, ports) = match (&s.network, s.status) {
            (Some(n), Status::Running) => (n.address_text(), n.ports_text()),
            _ => ("-".into(), String::new()),
        };
        println!(
            "{:<12}  {:<24}  {:<24}  {:<16}  {:>7}  {:>21}  {:>6}  {:<14}  {:<15}  {}",
            s.short_id(),
            s.name,
            s.image,
            status(s),
            pid,
            mem,
            cpu,
            ago(s.created),
            addr,
            ports
        );
    }
    Ok(0)
}
