//! `cgsight stop`: SIGTERM, then SIGKILL after a grace period.

use std::time::Duration;

use cgsight_launcher::lifecycle;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    super::for_each_container(&a.containers, |store, st| {
        lifecycle::stop(&store, &st, Duration::from_secs(a.time));
        println!("{}", st.name);
        Ok(0)
    })
}
