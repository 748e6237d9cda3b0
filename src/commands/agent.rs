//! `cgsight agent`: the metrics server.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
// No arg group: `cgsight daemon` flattens these into its own `Args`.
#[group(skip)]
pub struct Args {
    /// Address to serve /metrics on.
    #[arg(long, default_value = cgsight_agent::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Exporter-toolkit web config (TLS cert/key, client CA, basic-auth users with bcrypt hashes).
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,
    /// Export every cgroup, not only containers, services and the root.
    #[arg(long)]
    pub all_cgroups: bool,
    /// Where cgsight containers' state.json files live (names and images come from there).
    #[arg(long, default_value = cgsight_agent::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
}

impl Args {
    pub fn config(self, extra: Vec<cgsight_agent::Producer>) -> cgsight_agent::Config {
        cgsight_agent::Config {
            listen: self.listen,
            web_config: self.web_config,
            all_cgroups: self.all_cgroups,
            state_dir: self.state_dir,
            extra,
            listener: None,
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    cgsight_agent::run(a.config(Vec::new()))?;
    Ok(0)
}
