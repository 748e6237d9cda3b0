//! `cgsight daemon`: the FUSE views and the metrics agent in one process.

use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub agent: super::agent::Args,
    #[command(flatten)]
    pub views: super::fs::ViewArgs,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    // A long-lived daemon must not hold a pipe its caller waits on for EOF.
    cgsight_launcher::startup::close_inherited(None);
    let fs = cgsight_fusefs::spawn(a.views.config(4))
        .with_context(|| format!("mounting the views at {}", a.views.mountpoint.display()))?;
    super::fs::repair_containers(&a.views.mountpoint);
    let m = fs.metrics();
    let extra: Vec<cgsight_agent::Producer> = vec![Arc::new(move |out: &mut String| m.encode(out))];
    // The agent returns on SIGTERM/SIGINT; unmount in every case.
    let r = cgsight_agent::run(a.agent.config(extra));
    fs.unmount();
    r?;
    Ok(0)
}
