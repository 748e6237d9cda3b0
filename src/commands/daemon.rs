//! `cgsight daemon`: the FUSE views and the metrics agent in one process.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub agent: super::agent::Args,
    /// Where to mount the /proc and /sys views.
    #[arg(long, default_value = "/var/lib/cgsight/fs")]
    pub mountpoint: PathBuf,
    /// How many CPUs the views show: `quota` (min of cpuset and ceil(quota)) or `cpuset`.
    #[arg(long, default_value = "quota", value_parser = ["quota", "cpuset"])]
    pub cpu_view: String,
    /// Serve the views over io_uring: auto (when the kernel has it on), on, off.
    #[arg(long, value_enum, default_value = "auto")]
    pub io_uring: super::fs::IoUringArg,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let cpu_view = if a.cpu_view == "cpuset" {
        cgsight_fusefs::CpuView::Cpuset
    } else {
        cgsight_fusefs::CpuView::Quota
    };
    let fs = cgsight_fusefs::spawn(cgsight_fusefs::FsConfig {
        mountpoint: a.mountpoint.clone(),
        cpu_view,
        threads: 4,
        io_uring: a.io_uring.into(),
    })
    .with_context(|| format!("mounting the views at {}", a.mountpoint.display()))?;
    let m = fs.metrics();
    let extra: Vec<cgsight_agent::Producer> = vec![Arc::new(move |out: &mut String| m.encode(out))];
    // The agent returns on SIGTERM/SIGINT; unmount in every case.
    let r = cgsight_agent::run(a.agent.config(extra));
    fs.unmount();
    r?;
    Ok(0)
}
