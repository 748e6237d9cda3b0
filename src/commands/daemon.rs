//! `cgsight daemon`: the FUSE views and the metrics agent in one process.

use std::path::PathBuf;

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
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    // TODO(integrator): start the FUSE views here once cgsight_fusefs exposes its contract API:
    //   let fs = cgsight_fusefs::spawn(cgsight_fusefs::FsConfig {
    //       mountpoint: a.mountpoint.clone(),
    //       cpu_view: if a.cpu_view == "cpuset" { CpuView::Cpuset } else { CpuView::Quota },
    //       threads: 4,
    //   })?;
    //   let m = fs.metrics();
    //   let extra: Vec<cgsight_agent::Producer> = vec![std::sync::Arc::new(move |out| m.encode(out))];
    //   ... cgsight_agent::run(a.agent.config(extra)) ...; fs.unmount();
    // Until then the daemon runs the agent alone and says so.
    tracing::warn!(
        mountpoint = %a.mountpoint.display(),
        cpu_view = %a.cpu_view,
        "the FUSE views are not wired into `cgsight daemon` yet; serving metrics only"
    );
    cgsight_agent::run(a.agent.config(Vec::new()))?;
    Ok(0)
}
